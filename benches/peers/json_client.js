// A compressing JSON client on Node.js `ws`, for `cargo bench --bench
// compression`: echoes COUNT messages from FILE (one a line) through the
// server at URL, WINDOW at a time, and prints the time and this process's
// CPU time the exchange took (the connect excluded).
// Usage: node json_client.js URL FILE COUNT WINDOW
'use strict';
const fs = require('fs');
const WebSocket = require('ws');

const [url, file, countText, windowText] = process.argv.slice(2);
const count = Number(countText);
const window = Number(windowText);
const payloads = fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.length > 0);
// perMessageDeflate is on by default for a client; its threshold (1024
// bytes) lets 1 KiB messages through compressed.
const ws = new WebSocket(url, { perMessageDeflate: true });
let sent = 0;
let received = 0;
let start;
let cpu;

function sendBatch() {
  const batch = Math.min(window, count - sent);
  for (let i = sent; i < sent + batch; i++) ws.send(payloads[i % payloads.length]);
  sent += batch;
}

ws.on('open', () => {
  if (ws.extensions.indexOf('permessage-deflate') < 0) throw new Error('no compression agreed');
  start = process.hrtime.bigint();
  cpu = process.cpuUsage();
  sendBatch();
});
ws.on('message', () => {
  received += 1;
  if (received === count) {
    const secs = Number(process.hrtime.bigint() - start) / 1e9;
    const used = process.cpuUsage(cpu);
    console.log(`RESULT ${secs.toFixed(6)} ${((used.user + used.system) / 1e6).toFixed(6)}`);
    ws.close();
  } else if (received === sent) {
    sendBatch();
  }
});
ws.on('error', (e) => {
  console.error(e.message);
  process.exit(1);
});
