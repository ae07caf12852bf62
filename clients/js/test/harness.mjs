// A scripted gateway for the helpers' unit tests: it answers requests and delivers events to a socket with
// socket.io-client's surface (on/off/emit/timeout/connected/recovered), in the order a real connection
// would, and can lose messages, drop the connection and recover it. The gateway itself is tested for real
// in tests/test_js_client.py; here the streams are chosen to hit every path of the helpers.

/** A seeded PRNG (mulberry32), so a failing scenario can be replayed from its seed. */
export function random(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { next, int: (n) => Math.floor(next() * n), chance: (p) => next() < p };
}

/** socket.io-client's surface for a recorded stream: handlers, and every request (event, payload, cb) kept in
 * `pending` until the replay answers it from the recording. */
export class RecordedSocket {
  constructor() {
    this.handlers = new Map();
    this.connected = false;
    this.recovered = false;
    this.pending = []; // [event, request, cb]
  }
  on(event, fn) { (this.handlers.get(event) ?? this.handlers.set(event, new Set()).get(event)).add(fn); return this; }
  off(event, fn) { this.handlers.get(event)?.delete(fn); return this; }
  timeout() { return { emit: (event, request, cb) => this.pending.push([event, request, (ack) => cb(null, ack)]) }; }
  emit(event, request, cb) { this.pending.push([event, request, cb]); }
  fire(event, ...args) { for (const fn of [...(this.handlers.get(event) ?? [])]) fn(...args); }
}

export class ScriptedSocket {
  constructor(answer) {
    this.answer = answer; // (event, payload) -> ack, read when the request reaches the "gateway"
    this.handlers = new Map();
    this.connected = false;
    this.recovered = false;
    this.queue = []; // what the gateway has sent and the client has not read yet, in order
    this.requests = [];
  }

  on(event, fn) {
    if (!this.handlers.has(event)) this.handlers.set(event, new Set());
    this.handlers.get(event).add(fn);
    return this;
  }

  off(event, fn) {
    this.handlers.get(event)?.delete(fn);
    return this;
  }

  timeout() {
    return { emit: (event, payload, cb) => this.request(event, payload, (ack) => cb(null, ack)) };
  }

  emit(event, payload, cb) {
    this.request(event, payload, cb);
  }

  /** The request reaches the gateway after what is already queued toward it; its ack is queued in turn. */
  request(event, payload, cb) {
    this.requests.push([event, payload]);
    this.queue.push({ ack: () => this.answer(event, payload), cb });
  }

  /** The gateway sends `event` (after everything queued). */
  send(event, ...args) {
    this.queue.push({ event, args });
  }

  /** Deliver one queued message (acks are computed now: the gateway answers in order). */
  step() {
    const message = this.queue.shift();
    if (!message) return false;
    if (message.cb) {
      const ack = message.ack();
      if (ack !== undefined) message.cb(ack);
    } else {
      this.fire(message.event, ...message.args);
    }
    return true;
  }

  drain() {
    while (this.step());
  }

  fire(event, ...args) {
    for (const fn of [...(this.handlers.get(event) ?? [])]) fn(...args);
  }

  connect(recovered = false) {
    this.connected = true;
    this.recovered = recovered;
    this.fire("connect");
  }

  /** The transport is gone: whatever was in flight is lost. */
  disconnect() {
    this.connected = false;
    this.queue = [];
    this.fire("disconnect", "transport close");
  }
}
