// A WebSocket server on the Node.js `ws` package, for tests/interop.rs.
// Same behaviour as python_server.py (see there): prints "PORT <n>",
// echoes, and answers the text commands close, fragments, ping, headers
// and close-of. Exits when stdin closes.
'use strict';
const { WebSocketServer } = require('ws');
const wsVersion = require('ws/package.json').version;

const closes = new Map();
const wss = new WebSocketServer({
  host: '127.0.0.1',
  port: 0,
  maxPayload: 64 * 1024 * 1024,
  perMessageDeflate: false,
  handleProtocols: (offered) => {
    for (const p of offered) if (p === 'chat' || p === 'superchat') return p;
    return false;
  },
});

wss.on('listening', () => console.log(`PORT ${wss.address().port} ws ${wsVersion}`));

wss.on('connection', (ws, req) => {
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
});

process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
