// The microphone, as PCM16 frames for the websocket. Runs in the audio rendering thread: the
// context already runs at the socket's rate, so this only converts and batches (20 ms frames)
// and measures the level for the meter.
class OctiCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.frameSamples = options.processorOptions.frameSamples;
    this.frame = new Int16Array(this.frameSamples);
    this.filled = 0;
    this.energy = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    for (let i = 0; i < channel.length; i++) {
      const sample = Math.max(-1, Math.min(1, channel[i]));
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
    return true;
  }
}

registerProcessor('octi-capture', OctiCapture);
