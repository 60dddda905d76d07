// One AudioWorkletProcessor does both directions on the audio clock: it collects the
// microphone into blocks of int16 PCM for the server and plays Moshi's int16 PCM from a
// bounded queue. Each block it sends carries the samples it played during the same time,
// so the page can record both sides aligned as heard.
class MoshiIO extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = options.processorOptions;
    this.block = o.block;          // samples per message to the server
    this.maxQueue = o.maxQueue;    // playback samples beyond which the oldest are dropped
    this.target = o.target;        // playback samples to settle back to (see settle())
    this.aboveFor = 0;             // samples of time the queue has stayed above target + a block
    this.starving = false;
    this.mic = new Int16Array(this.block);
    this.played = new Int16Array(this.block);
    this.fill = 0;
    this.queue = [];               // Int16Array chunks from the server
    this.head = 0;                 // read position in queue[0]
    this.queued = 0;               // samples waiting
    this.running = true;
    this.started = false;          // something has been played
    this.stats = { playedSamples: 0, nonSilentSamples: 0, peak: 0, underruns: 0, droppedSamples: 0 };
    this.level = 0;
    this.sinceReport = 0;
    this.port.onmessage = (e) => {
      if (e.data === "stop") { this.running = false; return; }
      const chunk = new Int16Array(e.data);
      this.queue.push(chunk);
      this.queued += chunk.length;
      // bounded lag: never let the playback queue grow, drop the oldest audio instead
      this.dropTo(this.maxQueue);
    };
  }

  dropTo(limit) {
    while (this.queued > limit && this.queue.length) {
      const first = this.queue[0];
      const n = Math.min(first.length - this.head, this.queued - limit);
      this.head += n; this.queued -= n; this.stats.droppedSamples += n;
      if (this.head >= first.length) { this.queue.shift(); this.head = 0; }
    }
  }

  // After a hiccup (the server or the network stalled, then sent a burst) the queue stays
  // longer than needed, and so does the lag, since audio arrives exactly as fast as it is
  // played. If it stays more than a block above target for a second, drop back to target.
  settle(n) {
    if (this.queued > this.target + this.block) {
      this.aboveFor += n;
      if (this.aboveFor >= sampleRate) { this.dropTo(this.target); this.aboveFor = 0; }
    } else {
      this.aboveFor = 0;
    }
  }

  nextSample() {
    while (this.queue.length) {
      const first = this.queue[0];
      if (this.head < first.length) { this.queued--; return first[this.head++]; }
      this.queue.shift(); this.head = 0;
    }
    return null;
  }

  process(inputs, outputs) {
    const input = inputs[0] && inputs[0].length ? inputs[0][0] : null;
    const out = outputs[0];
    const n = out[0].length;
    let underrun = false, peak = 0;
    for (let i = 0; i < n; i++) {
      const x = input ? Math.max(-1, Math.min(1, input[i])) : 0;
      let s = this.nextSample();
      if (s === null) { s = 0; underrun = true; } else { this.started = true; }
      const y = s / 32768;
      for (let c = 0; c < out.length; c++) out[c][i] = y;
      this.stats.playedSamples++;
      if (s !== 0) { this.stats.nonSilentSamples++; }
      const a = Math.abs(s);
      if (a > peak) peak = a;
      this.mic[this.fill] = Math.round(x * 32767);
      this.played[this.fill] = s;
      if (++this.fill === this.block) {
        this.port.postMessage({ mic: this.mic.buffer, played: this.played.buffer }, [this.mic.buffer, this.played.buffer]);
        this.mic = new Int16Array(this.block);
        this.played = new Int16Array(this.block);
        this.fill = 0;
      }
    }
    // an underrun is counted once when playback starts starving, not per quantum
    if (underrun && this.started && !this.starving) this.stats.underruns++;
    this.starving = underrun;
    this.settle(n);
    if (peak > this.stats.peak) this.stats.peak = peak;
    this.level = Math.max(peak / 32768, this.level);  // the peak since the last report
    this.sinceReport += n;
    if (this.sinceReport >= sampleRate / 8) {
      this.sinceReport = 0;
      this.port.postMessage({ stats: Object.assign({ queued: this.queued, level: this.level }, this.stats) });
      this.level = 0;
    }
    return this.running;
  }
}

registerProcessor("moshi-io", MoshiIO);
