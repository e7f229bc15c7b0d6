'use strict';
// An SMPP 3.4 SMSC for smsgw's interop tests, built on the npm package `smpp` (not our code).
// stdout: one JSON event per line: {"event":"listening","port":N} first, then "pdu" for each
// PDU received, "submit_sm_resp" (the message_id given), "receipt_sent", "mo_sent", "closed"...
// stdin: one JSON command per line, answered by {"event":"done","cmd":...,"ref":...} (with
// "error" if it was refused):
//   {"cmd":"mo","source":"+1202...","destination":"...","text":"...","data_coding":8,"ref":1}
//   {"cmd":"reject","status":"ESME_RTHROTTLED","count":1}   the next submit_sm(s) fail so
//   {"cmd":"drop"}   cut every connection, no unbind         {"cmd":"stop"}   unbind all, exit
// Usage: node smpp_server.js [--port N | N] [--system-id ID] [--password PW]
//   [--receipt-delay S] [--id-format dec|hex] [--receipt-id-format dec|hex]
//   [--receipt-stat DELIVRD|UNDELIV|...] [--receipt-err 000]
// SMPP_SYSTEM_ID / SMPP_PASSWORD in the environment stand in for the two options.
const readline = require('node:readline');
const { parseArgs } = require('node:util');
const smpp = require('smpp');

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    port: { type: 'string' },
    'system-id': { type: 'string', default: process.env.SMPP_SYSTEM_ID || 'smsgw' },
    password: { type: 'string', default: process.env.SMPP_PASSWORD || 'secret' },
    'receipt-delay': { type: 'string', default: '0.1' }, // seconds after submit_sm_resp
    'id-format': { type: 'string', default: 'dec' }, // message_id in submit_sm_resp
    'receipt-id-format': { type: 'string' }, // id: in the receipt text (default: the same)
    'receipt-stat': { type: 'string', default: 'DELIVRD' },
    'receipt-err': { type: 'string', default: '000' },
  },
});
const STATES = { ENROUTE: 1, DELIVRD: 2, EXPIRED: 3, DELETED: 4, UNDELIV: 5, ACCEPTD: 6, UNKNOWN: 7, REJECTD: 8 };
const STAT = opts['receipt-stat'];
if (!(STAT in STATES)) throw new Error(`unknown --receipt-stat ${STAT}`);
const BIND_MODES = { bind_transceiver: 'trx', bind_transmitter: 'tx', bind_receiver: 'rx' };
const HEADER = new Set(['command_length', 'command_id', 'command_status', 'sequence_number', 'command']);

// Wire values both ways: nothing is decoded on receipt nor encoded on send by the library
// (short_message stays the bytes the client sent; we build the bytes we send ourselves).
for (const def of Object.values(smpp.commands)) {
  for (const param of Object.values(def.params || {})) delete param.filter;
}
for (const tlv of Object.values(smpp.tlvs)) delete tlv.filter;

const emit = (event, fields) => process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`);
const plain = (v) => (Buffer.isBuffer(v) ? v.toString('hex') : Array.isArray(v) ? v.map(plain) : v);
const pad = (n) => String(n).padStart(2, '0');
const smppDate = (d) => // YYMMDDhhmm, UTC
  `${pad(d.getUTCFullYear() % 100)}${pad(d.getUTCMonth() + 1)}${pad(d.getUTCDate())}${pad(d.getUTCHours())}${pad(d.getUTCMinutes())}`;
const formatId = (n, format) => (format === 'hex' ? n.toString(16) : String(n));

// Ids grow from a base taken from the clock, so a restarted peer does not reuse them.
let nextId = (Date.now() % 1e9) * 1000;
let sessionCount = 0;
const pending = []; // deliver_sm waiting for a receiver to bind: [options, event, fields]
const reject = { status: 0, count: 0 };

function describe(pdu) {
  const params = (smpp.commands[pdu.command] || {}).params || {};
  const out = { command: pdu.command, sequence: pdu.sequence_number, command_status: pdu.command_status };
  const tlvs = {};
  for (const [key, value] of Object.entries(pdu)) {
    if (HEADER.has(key) || key === 'password') continue;
    if (key === 'short_message') out.short_message_hex = value.toString('hex');
    else if (key in params) out[key] = plain(value);
    else if (/^\d+$/.test(key)) tlvs[`0x${Number(key).toString(16).padStart(4, '0')}`] = plain(value);
    else tlvs[key] = plain(value);
  }
  out.tlvs = tlvs;
  return out;
}

function encodeText(text, dataCoding) {
  if (dataCoding === 8) return smpp.encodings.UCS2.encode(text);
  if (dataCoding === 3) return smpp.encodings.LATIN1.encode(text);
  if (dataCoding === 1) return Buffer.from(text, 'ascii');
  return smpp.encodings.ASCII.encode(text); // GSM 03.38, one septet per octet
}

// The first 20 characters of a submitted message, for the receipt's text: field.
function preview(pdu) {
  let body = pdu.short_message.length ? pdu.short_message : pdu.message_payload || Buffer.alloc(0);
  if (pdu.esm_class & 0x40 && body.length) body = body.subarray(body[0] + 1);
  const dc = pdu.data_coding & 0x0f;
  const text = dc === 8 ? smpp.encodings.UCS2.decode(body)
    : dc === 0 ? smpp.encodings.ASCII.decode(body) : body.toString('latin1');
  return text.slice(0, 20).replace(/[^\x20-\x7e]/g, '?');
}

// Sends a deliver_sm to `preferred` if it can receive, else to any bound receiver, else
// keeps it until one binds. Emits `event` with the deliver_sm_resp status.
function deliver(options, event, fields, preferred) {
  const canReceive = (s) => s.mode === 'rx' || s.mode === 'trx';
  const target = preferred && canReceive(preferred) && server.sessions.includes(preferred)
    ? preferred : server.sessions.find(canReceive);
  if (!target) return void pending.push([options, event, fields]);
  target.deliver_sm(options, (resp) =>
    emit(event, { ...fields, session: target.id, sequence: resp.sequence_number, command_status: resp.command_status }));
}

function addressOf(number) {
  const international = String(number).startsWith('+');
  return { addr: String(number).replace(/^\+/, ''), ton: international ? 1 : 0, npi: 1 };
}

const handlers = {
  bind(session, pdu) {
    let status = 0;
    if (session.mode) status = smpp.ESME_RALYBND;
    else if (pdu.system_id !== opts['system-id']) status = smpp.ESME_RINVSYSID;
    else if (pdu.password !== opts.password) status = smpp.ESME_RINVPASWD;
    session.send(pdu.response({ command_status: status, system_id: 'SMSGWPEER' }));
    if (status) return;
    session.mode = BIND_MODES[pdu.command];
    if (session.mode !== 'tx') for (const args of pending.splice(0)) deliver(...args);
  },
  submit_sm(session, pdu) {
    let status = session.mode === 'tx' || session.mode === 'trx' ? 0 : smpp.ESME_RINVBNDSTS;
    if (!status && reject.count > 0) [status, reject.count] = [reject.status, reject.count - 1];
    const answer = { session: session.id, sequence: pdu.sequence_number, command_status: status };
    if (status) {
      session.send(pdu.response({ command_status: status }));
      return void emit('submit_sm_resp', answer);
    }
    const n = nextId++;
    const messageId = formatId(n, opts['id-format']);
    const submitted = smppDate(new Date());
    session.send(pdu.response({ message_id: messageId }));
    emit('submit_sm_resp', { ...answer, message_id: messageId });
    const wanted = pdu.registered_delivery & 0x03;
    if (wanted !== 1 && !(wanted === 2 && STAT !== 'DELIVRD')) return;
    const delivered = STAT === 'DELIVRD' ? '001' : '000';
    const textId = formatId(n, opts['receipt-id-format'] || opts['id-format']);
    const text = `id:${textId} sub:001 dlvrd:${delivered} submit date:${submitted} `
      + `done date:${smppDate(new Date())} stat:${STAT} err:${opts['receipt-err']} text:${preview(pdu)}`;
    const receipt = {
      source_addr_ton: pdu.dest_addr_ton, source_addr_npi: pdu.dest_addr_npi, source_addr: pdu.destination_addr,
      dest_addr_ton: pdu.source_addr_ton, dest_addr_npi: pdu.source_addr_npi, destination_addr: pdu.source_addr,
      esm_class: 0x04, data_coding: 0, short_message: Buffer.from(text, 'ascii'),
      receipted_message_id: messageId, message_state: STATES[STAT],
    };
    setTimeout(() => deliver(receipt, 'receipt_sent', { message_id: messageId }, session),
      Number(opts['receipt-delay']) * 1000);
  },
  enquire_link(session, pdu) { session.send(pdu.response()); },
  unbind(session, pdu) {
    session.mode = null;
    session.send(pdu.response(), () => session.close());
  },
};
for (const command of Object.keys(BIND_MODES)) handlers[command] = handlers.bind;

const server = smpp.createServer((session) => {
  session.id = ++sessionCount;
  session.mode = null;
  emit('connected', { session: session.id });
  session.on('error', (e) => emit('session_error', { session: session.id, error: e.message }));
  session.on('close', () => emit('closed', { session: session.id }));
  session.on('pdu', (pdu) => {
    emit('pdu', { session: session.id, ...describe(pdu) });
    if (handlers[pdu.command]) handlers[pdu.command](session, pdu);
    else if (!pdu.isResponse()) session.send(pdu.response({ command_status: smpp.ESME_RINVCMDID }));
  });
});

let stopping = false;
function stop() {
  if (stopping) return;
  stopping = true;
  server.close();
  const bound = server.sessions.filter((s) => s.mode);
  for (const s of server.sessions.filter((s) => !s.mode)) s.destroy();
  let left = bound.length;
  const done = () => { emit('stopped', {}); process.exit(0); };
  if (!left) return done();
  setTimeout(done, 1000).unref(); // a client that never answers the unbind
  for (const s of bound) {
    s.on('close', () => { if (--left === 0) done(); });
    s.unbind(() => s.destroy());
  }
}

const commands = {
  mo(cmd) {
    const dataCoding = cmd.data_coding ?? 0;
    const body = cmd.short_message_hex != null
      ? Buffer.from(cmd.short_message_hex, 'hex') : encodeText(cmd.text ?? '', dataCoding);
    const [src, dst] = [addressOf(cmd.source), addressOf(cmd.destination)];
    const long = body.length > 254; // too long for short_message: message_payload instead
    deliver({
      source_addr_ton: src.ton, source_addr_npi: src.npi, source_addr: src.addr,
      dest_addr_ton: dst.ton, dest_addr_npi: dst.npi, destination_addr: dst.addr,
      esm_class: cmd.esm_class ?? 0, data_coding: dataCoding,
      short_message: long ? Buffer.alloc(0) : body, ...(long ? { message_payload: body } : {}),
    }, 'mo_sent', { ref: cmd.ref ?? null });
  },
  reject(cmd) {
    reject.status = typeof cmd.status === 'number' ? cmd.status : smpp.errors[cmd.status];
    if (!reject.status) throw new Error(`unknown status ${cmd.status}`);
    reject.count = cmd.count ?? 1;
  },
  drop() { for (const s of [...server.sessions]) s.destroy(); },
  stop,
};

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (!line.trim()) return;
  let cmd = {};
  try {
    cmd = JSON.parse(line);
    if (!commands[cmd.cmd]) throw new Error(`unknown command ${cmd.cmd}`);
    commands[cmd.cmd](cmd);
    if (cmd.cmd !== 'stop') emit('done', { cmd: cmd.cmd, ref: cmd.ref ?? null }); // it took effect
  } catch (e) {
    emit('done', { cmd: cmd.cmd ?? null, ref: cmd.ref ?? null, error: e.message, line });
  }
}).on('close', stop); // our parent went away: do not outlive it

server.listen(Number(opts.port ?? positionals[0] ?? 0), '127.0.0.1', () =>
  emit('listening', { port: server.address().port }));
