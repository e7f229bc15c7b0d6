'use strict';
// The SMSC sink of bench/smpp.py, on the npm package `smpp` (not our code), so neither
// smsgw nor Kannel is measured against a server its own authors wrote.
// It answers every submit_sm after --resp-delay-ms (0 = at once) with a decimal message id
// and, when the submit asks for a receipt (registered_delivery & 1), sends a deliver_sm
// receipt in the classic text form --receipt-delay-ms later on the same session. It keeps
// counters only (no per-PDU output) so that it is not the bottleneck.
// stdout: {"event":"listening","port":N}, then one {"event":"stats",...} line per
//   {"cmd":"stats"} read on stdin. Exits when stdin closes.
// Usage: node smpp_sink.js --system-id ID --password PW [--port N]
//   [--resp-delay-ms 5] [--receipt-delay-ms 1000] [--target N]
// --target N: stats also carry target_receipt_ack_ms, when the N-th receipt was acknowledged.
const readline = require('node:readline');
const { parseArgs } = require('node:util');
const smpp = require('smpp');

const { values: opts } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    'system-id': { type: 'string' },
    password: { type: 'string' },
    'resp-delay-ms': { type: 'string', default: '0' },
    'receipt-delay-ms': { type: 'string', default: '1000' },
    target: { type: 'string', default: '0' },
  },
});
const RESP_DELAY = Number(opts['resp-delay-ms']);
const RECEIPT_DELAY = Number(opts['receipt-delay-ms']);
const TARGET = Number(opts.target);
const stats = {
  binds: 0, submits: 0, submit_parts_long: 0, receipts_sent: 0, receipts_acked: 0,
  receipts_refused: 0, receipt_wanted: 0, closed: 0, first_submit_ms: 0, last_submit_ms: 0,
  last_receipt_ack_ms: 0, target_receipt_ack_ms: 0,
};
let nextId = 1000000;

const pad = (n) => String(n).padStart(2, '0');
const smppDate = (d) => // YYMMDDhhmm, UTC
  `${pad(d.getUTCFullYear() % 100)}${pad(d.getUTCMonth() + 1)}${pad(d.getUTCDate())}${pad(d.getUTCHours())}${pad(d.getUTCMinutes())}`;

function sendReceipt(session, pdu, messageId, submitted) {
  const text = `id:${messageId} sub:001 dlvrd:001 submit date:${submitted} `
    + `done date:${smppDate(new Date())} stat:DELIVRD err:000 text:`;
  stats.receipts_sent++;
  session.deliver_sm({
    source_addr_ton: pdu.dest_addr_ton, source_addr_npi: pdu.dest_addr_npi, source_addr: pdu.destination_addr,
    dest_addr_ton: pdu.source_addr_ton, dest_addr_npi: pdu.source_addr_npi, destination_addr: pdu.source_addr,
    esm_class: 0x04, data_coding: 0, short_message: Buffer.from(text, 'ascii'),
    receipted_message_id: messageId, message_state: 2,
  }, (resp) => {
    if (resp.command_status === 0) {
      stats.receipts_acked++;
      stats.last_receipt_ack_ms = Date.now();
      if (stats.receipts_acked === TARGET) stats.target_receipt_ack_ms = stats.last_receipt_ack_ms;
    } else {
      stats.receipts_refused++;
    }
  });
}

function answerSubmit(session, pdu) {
  const messageId = String(nextId++);
  session.send(pdu.response({ message_id: messageId }));
  stats.submits++;
  stats.last_submit_ms = Date.now();
  if (!stats.first_submit_ms) stats.first_submit_ms = stats.last_submit_ms;
  if (pdu.registered_delivery & 0x01) {
    stats.receipt_wanted++;
    const submitted = smppDate(new Date());
    setTimeout(() => { if (!session.closed) sendReceipt(session, pdu, messageId, submitted); },
      RECEIPT_DELAY);
  }
}

const server = smpp.createServer((session) => {
  session.on('error', (e) => process.stderr.write(`sink: session error: ${e.message}\n`));
  session.on('close', () => { session.closed = true; stats.closed++; });
  session.on('pdu', (pdu) => {
    switch (pdu.command) {
      case 'bind_transceiver':
      case 'bind_transmitter':
      case 'bind_receiver': {
        const ok = pdu.system_id === opts['system-id'] && pdu.password === opts.password;
        session.send(pdu.response({
          command_status: ok ? 0 : smpp.ESME_RBINDFAIL, system_id: 'SINK',
        }));
        if (ok) stats.binds++;
        break;
      }
      case 'submit_sm':
        if (RESP_DELAY > 0) setTimeout(() => answerSubmit(session, pdu), RESP_DELAY);
        else answerSubmit(session, pdu);
        break;
      case 'enquire_link':
        session.send(pdu.response());
        break;
      case 'unbind':
        session.send(pdu.response(), () => session.close());
        break;
      default:
        if (!pdu.isResponse()) session.send(pdu.response({ command_status: smpp.ESME_RINVCMDID }));
    }
  });
});

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  let cmd;
  try { cmd = JSON.parse(line); } catch { return; }
  if (cmd.cmd === 'stats') process.stdout.write(`${JSON.stringify({ event: 'stats', ...stats })}\n`);
}).on('close', () => process.exit(0));

server.listen(Number(opts.port), '127.0.0.1', () =>
  process.stdout.write(`${JSON.stringify({ event: 'listening', port: server.address().port })}\n`));
