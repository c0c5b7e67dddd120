// OCTI's voice: a queue of PCM16 chunks played back to back. It starts once PREBUFFER of audio
// is queued (or the answer is complete), so network jitter does not make it stutter, and it
// counts every sample that leaves the queue, played or dropped on a clear, for the server's
// barge-in arithmetic. With `record`, it also sends back what it played (tests).
const PREBUFFER_MS = 80;
const REPORT_MS = 50;

class OctiPlayback extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.prebuffer = Math.round(sampleRate * PREBUFFER_MS / 1000);
    this.reportEvery = Math.round(sampleRate * REPORT_MS / 1000);
    this.record = Boolean(options.processorOptions && options.processorOptions.record);
    this.chunks = [];
    this.offset = 0;      // into chunks[0]
    this.queued = 0;      // samples waiting
    this.consumed = 0;    // samples played or dropped since the socket opened
    this.playing = false;
    this.complete = false;  // the server said the answer's audio is all sent
    this.unreported = 0;
    this.port.onmessage = (event) => this.receive(event.data);
  }

  receive(message) {
    if (message.type === 'audio') {
      this.chunks.push(message.samples);
      this.queued += message.samples.length;
    } else if (message.type === 'complete') {
      this.complete = true;
    } else if (message.type === 'clear') {
      this.consumed += this.queued;
      this.chunks = [];
      this.offset = 0;
      this.queued = 0;
      this.playing = false;
      this.report(true);
    } else if (message.type === 'reset') {  // a new socket: counting starts again
      this.chunks = [];
      this.offset = 0;
      this.queued = 0;
      this.consumed = 0;
      this.playing = false;
    }
  }

  report(dry) {
    this.port.postMessage({ type: 'played', samples: this.consumed, dry });
    this.unreported = 0;
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    if (!this.playing && this.queued > 0 && (this.queued >= this.prebuffer || this.complete)) {
      this.playing = true;
    }
    let written = 0;
    while (this.playing && written < out.length && this.chunks.length) {
      const chunk = this.chunks[0];
      const n = Math.min(out.length - written, chunk.length - this.offset);
      for (let k = 0; k < n; k++) out[written + k] = chunk[this.offset + k] / 32768;
      written += n;
      this.offset += n;
      if (this.offset === chunk.length) {
        this.chunks.shift();
        this.offset = 0;
      }
    }
    out.fill(0, written);
    if (written > 0) {
      if (this.record) this.port.postMessage({ type: 'tap', samples: out.slice(0, written) });
      this.queued -= written;
      this.consumed += written;
      this.unreported += written;
      if (this.queued === 0) {
        this.playing = false;
        this.complete = false;
        this.report(true);
      } else if (this.unreported >= this.reportEvery) {
        this.report(false);
      }
    }
    return true;
  }
}

registerProcessor('octi-playback', OctiPlayback);
