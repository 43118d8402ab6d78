// A WebSocket server on the Node.js `ws` package, for tests/interop.rs.
// Same behaviour as python_server.py (see there): prints "PORT <n>",
// echoes, and answers the text commands close, fragments, ping, headers
// and close-of. Compression as there: off but on /deflate/SNCT/CNCT/SBITS/CBITS
// (every message compressed, whatever its size). Exits when stdin closes.
'use strict';
const http = require('http');
const { WebSocketServer } = require('ws');
const wsVersion = require('ws/package.json').version;

const closes = new Map();
const handleProtocols = (offered) => {
  for (const p of offered) if (p === 'chat' || p === 'superchat') return p;
  return false;
};

// One WebSocketServer per compression setting, made on first use.
const servers = new Map();
function serverFor(path) {
  const parts = path.split('/');
  const key = parts.length === 6 && parts[1] === 'deflate' ? parts.slice(2).join('/') : 'off';
  if (!servers.has(key)) {
    let perMessageDeflate = false;
    if (key !== 'off') {
      const [snct, cnct, sbits, cbits] = parts.slice(2);
      perMessageDeflate = { threshold: 0 };
      if (snct === '1') perMessageDeflate.serverNoContextTakeover = true;
      if (cnct === '1') perMessageDeflate.clientNoContextTakeover = true;
      if (sbits !== '-') perMessageDeflate.serverMaxWindowBits = Number(sbits);
      if (cbits !== '-') perMessageDeflate.clientMaxWindowBits = Number(cbits);
    }
    const wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024 * 1024, perMessageDeflate, handleProtocols });
    wss.on('connection', onConnection);
    servers.set(key, wss);
  }
  return servers.get(key);
}

const server = http.createServer((req, res) => {
  res.writeHead(426);
  res.end();
});
server.on('upgrade', (req, socket, head) => {
  const wss = serverFor(req.url);
  wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
});
server.listen(0, '127.0.0.1', () => console.log(`PORT ${server.address().port} ws ${wsVersion}`));

function onConnection(ws, req) {
  const token = req.url.startsWith('/id/') ? req.url.slice(4) : null;
  ws.on('close', (code, reason) => {
    // 1006 is what ws reports when no close frame arrived.
    if (token !== null) closes.set(token, code === 1006 ? 'no-close-frame' : `${code} ${reason.toString()}`);
  });
  ws.on('message', (data, isBinary) => {
    if (!isBinary) {
      const msg = data.toString();
      if (msg.startsWith('close ')) {
        const [, code, ...rest] = msg.split(' ');
        ws.close(Number(code), rest.join(' '));
        return;
      }
      if (msg.startsWith('fragments ')) {
        const parts = msg.slice('fragments '.length).split('|');
        parts.forEach((p, i) => ws.send(p, { binary: false, fin: i === parts.length - 1 }));
        return;
      }
      if (msg.startsWith('ping ')) {
        const payload = Buffer.from(msg.slice('ping '.length));
        ws.once('pong', (got) => ws.send(got.equals(payload) ? `pong ${msg.slice(5)}` : `pong mismatch ${got}`));
        ws.ping(payload);
        return;
      }
      if (msg === 'headers') {
        ws.send(JSON.stringify({ path: req.url, headers: req.headers }));
        return;
      }
      if (msg.startsWith('close-of ')) {
        ws.send(closes.get(msg.slice('close-of '.length)) || 'pending');
        return;
      }
    }
    ws.send(data, { binary: isBinary });
  });
}

process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
