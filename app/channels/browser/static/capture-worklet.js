// The microphone, as PCM16 frames for the websocket. Runs in the audio rendering thread of a
// context at the device's own rate (Firefox connects a microphone to no context of another
// rate), so this resamples to the socket's rate (low-passed first when it lowers the rate, so
// that what is above the socket's range does not fold back into speech), converts and batches
// (20 ms frames) and measures the level for the meter.
const TAPS = 31;            // the low-pass filter's length: an odd number, centred on the sample
const CUTOFF = 0.45;        // of the socket's rate: just below its Nyquist frequency (0.5)

// A windowed-sinc low-pass filter passing up to `cutoff` cycles per input sample.
function lowPass(cutoff) {
  const taps = new Float32Array(TAPS);
  const middle = (TAPS - 1) / 2;
  let sum = 0;
  for (let i = 0; i < TAPS; i++) {
    const x = i - middle;
    const sinc = x === 0 ? 2 * cutoff : Math.sin(2 * Math.PI * cutoff * x) / (Math.PI * x);
    const blackman = 0.42 - 0.5 * Math.cos(2 * Math.PI * i / (TAPS - 1)) + 0.08 * Math.cos(4 * Math.PI * i / (TAPS - 1));
    taps[i] = sinc * blackman;
    sum += taps[i];
  }
  return taps.map((tap) => tap / sum);  // unity gain for speech
}

class OctiCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const rate = options.processorOptions.rate;
    this.step = sampleRate / rate;  // input samples per output sample
    this.taps = this.step > 1 ? lowPass(CUTOFF / this.step) : null;
    this.history = new Float32Array(TAPS);  // the last inputs, a ring for the filter
    this.newest = 0;
    this.previous = 0;  // the input sample before the current one (filtered)
    this.at = 1;        // where the next output sample falls, in input samples after `previous`
    this.frameSamples = rate / 50;
    this.frame = new Int16Array(this.frameSamples);
    this.filled = 0;
    this.energy = 0;
  }

  filtered(sample) {
    if (!this.taps) return sample;
    this.newest = (this.newest + 1) % TAPS;
    this.history[this.newest] = sample;
    let sum = 0;
    for (let i = 0; i < TAPS; i++) sum += this.taps[i] * this.history[(this.newest + TAPS - i) % TAPS];
    return sum;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    for (let i = 0; i < channel.length; i++) {
      const current = this.filtered(channel[i]);
      for (; this.at <= 1; this.at += this.step) {  // linear interpolation between the two
        this.emit(this.previous + (current - this.previous) * this.at);
      }
      this.at -= 1;
      this.previous = current;
    }
    return true;
  }

  emit(value) {
    const sample = Math.max(-1, Math.min(1, value));
    this.frame[this.filled++] = sample < 0 ? sample * 32768 : sample * 32767;
    this.energy += sample * sample;
    if (this.filled === this.frameSamples) {
      const level = Math.sqrt(this.energy / this.frameSamples);
      this.port.postMessage({ pcm: this.frame.buffer, level }, [this.frame.buffer]);
      this.frame = new Int16Array(this.frameSamples);
      this.filled = 0;
      this.energy = 0;
    }
  }
}

registerProcessor('octi-capture', OctiCapture);
