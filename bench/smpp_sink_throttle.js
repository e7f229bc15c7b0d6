'use strict';
// The throttling SMSC of bench/smpp_throttle.py, on the npm package `smpp` (not our code).
// A token bucket accepts at most the scheduled rate (submits a second) and answers the
// excess with ESME_RTHROTTLED (0x58), as a carrier enforcing its contract does. The
// schedule's times are seconds after the first submit_sm, so both systems see the same
// carrier however long they take to start. No receipts.
// It records when (ms after the first submit) each submit was accepted, and for each
// message (its short_message text, unique per message in the bench) how long it waited
// between its first throttle and its acceptance.
// stdout: {"event":"listening","port":N}, then one {"event":"stats",...} line per
//   {"cmd":"stats"} (counters) or {"cmd":"detail"} (counters and accept times) on stdin.
//   Exits when stdin closes.
// Usage: node smpp_sink_throttle.js --system-id ID --password PW [--port N]
//   [--schedule 0:200,5:50,10:300] [--burst-ms 100]
const readline = require('node:readline');
const { parseArgs } = require('node:util');
const smpp = require('smpp');

const { values: opts } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    'system-id': { type: 'string' },
    password: { type: 'string' },
    schedule: { type: 'string', default: '0:200' },
    'burst-ms': { type: 'string', default: '100' },
  },
});
const SCHEDULE = opts.schedule.split(',').map((step) => step.split(':').map(Number))
  .sort((a, b) => a[0] - b[0]);
const BURST_S = Number(opts['burst-ms']) / 1000;
const stats = {
  binds: 0, submits: 0, accepted: 0, throttled: 0, throttled_messages: 0,
  first_submit_ms: 0, last_accept_ms: 0, first_throttle_ms: null, max_wait_ms: 0,
};
const acceptedAt = []; // ms after the first submit
const firstThrottle = new Map(); // text -> ms of its first throttle, until accepted
let nextId = 1000000;
let tokens = 0;
let stamp = 0;

function rateAt(s) {
  let rate = SCHEDULE[0][1];
  for (const [from, r] of SCHEDULE) if (s >= from) rate = r;
  return rate;
}

function take(now) {
  const s = (now - stats.first_submit_ms) / 1000;
  const rate = rateAt(s);
  const burst = Math.max(1, rate * BURST_S);
  tokens = Math.min(burst, tokens + ((now - stamp) / 1000) * rate);
  stamp = now;
  if (tokens < 1) return false;
  tokens -= 1;
  return true;
}

function answerSubmit(session, pdu) {
  const now = Date.now();
  if (!stats.first_submit_ms) {
    stats.first_submit_ms = now;
    stamp = now;
    tokens = Math.max(1, SCHEDULE[0][1] * BURST_S);
  }
  stats.submits++;
  const text = Buffer.isBuffer(pdu.short_message) ? pdu.short_message.toString('latin1')
    : String(pdu.short_message && pdu.short_message.message !== undefined
      ? pdu.short_message.message : pdu.short_message);
  const at = now - stats.first_submit_ms;
  if (!take(now)) {
    stats.throttled++;
    if (stats.first_throttle_ms === null) stats.first_throttle_ms = at;
    if (!firstThrottle.has(text)) {
      firstThrottle.set(text, at);
      stats.throttled_messages++;
    }
    session.send(pdu.response({ command_status: smpp.ESME_RTHROTTLED }));
    return;
  }
  session.send(pdu.response({ message_id: String(nextId++) }));
  stats.accepted++;
  stats.last_accept_ms = now;
  acceptedAt.push(at);
  const throttledAt = firstThrottle.get(text);
  if (throttledAt !== undefined) {
    firstThrottle.delete(text);
    stats.max_wait_ms = Math.max(stats.max_wait_ms, at - throttledAt);
  }
}

const server = smpp.createServer((session) => {
  session.on('error', (e) => process.stderr.write(`sink: session error: ${e.message}\n`));
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
        answerSubmit(session, pdu);
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
  // still waiting: throttled and not accepted yet (their wait so far counts too)
  const now = stats.first_submit_ms ? Date.now() - stats.first_submit_ms : 0;
  let waiting = 0;
  for (const at of firstThrottle.values()) waiting = Math.max(waiting, now - at);
  const out = { event: 'stats', ...stats, still_waiting: firstThrottle.size, longest_waiting_ms: waiting };
  if (cmd.cmd === 'detail') out.accepted_at = acceptedAt;
  if (cmd.cmd === 'stats' || cmd.cmd === 'detail') process.stdout.write(`${JSON.stringify(out)}\n`);
}).on('close', () => process.exit(0));

server.listen(Number(opts.port), '127.0.0.1', () =>
  process.stdout.write(`${JSON.stringify({ event: 'listening', port: server.address().port })}\n`));
