// The alarm: a WebAudio beep pattern repeated every few seconds while an urgent alert is
// unclaimed. Browsers only let a page make sound after a user gesture, so the AudioContext is
// created (or resumed) from the click on the "enable sound" banner; until then `ready` is
// false and the app keeps the banner up.

const REPEAT_MS = 3000;

export class Alarm {
  constructor() {
    this.ctx = null;
    this.timer = null;
    this.active = false;
    this.onReadyChange = () => {};
  }

  get supported() {
    return typeof (window.AudioContext || window.webkitAudioContext) === 'function';
  }

  /** True when sound can actually be heard (context created and running). */
  get ready() {
    return !!this.ctx && this.ctx.state === 'running';
  }

  /** Must be called from a user gesture (click). Plays one short chirp as confirmation. */
  async enable() {
    if (!this.supported) return false;
    if (!this.ctx) {
      const Ctx = window.AudioContext || window.webkitAudioContext;
      this.ctx = new Ctx();
      // Chromium may suspend the context again (e.g. device change): tell the app to re-ask.
      this.ctx.addEventListener('statechange', () => this.onReadyChange(this.ready));
    }
    if (this.ctx.state !== 'running') await this.ctx.resume();
    this.tone(660, 0, 0.12, 0.15);
    this.onReadyChange(this.ready);
    return this.ready;
  }

  /** Start or stop the repeating alarm; idempotent, so the app can call it after every change. */
  set(on) {
    if (on === this.active) return;
    this.active = on;
    clearInterval(this.timer);
    this.timer = null;
    if (on) {
      this.pattern();
      this.timer = setInterval(() => this.pattern(), REPEAT_MS);
    }
  }

  /** Three rising beeps: distinct from phone ring tones, audible over room noise. */
  pattern() {
    if (!this.ready) return;
    this.tone(880, 0, 0.18);
    this.tone(988, 0.25, 0.18);
    this.tone(1175, 0.5, 0.3);
  }

  tone(freq, at, dur, gain = 0.35) {
    const ctx = this.ctx;
    const t0 = ctx.currentTime + at;
    const osc = ctx.createOscillator();
    const amp = ctx.createGain();
    osc.type = 'square';
    osc.frequency.value = freq;
    // Short ramps avoid clicks at start and end.
    amp.gain.setValueAtTime(0.0001, t0);
    amp.gain.exponentialRampToValueAtTime(gain, t0 + 0.02);
    amp.gain.setValueAtTime(gain, t0 + dur - 0.03);
    amp.gain.exponentialRampToValueAtTime(0.0001, t0 + dur);
    osc.connect(amp).connect(ctx.destination);
    osc.start(t0);
    osc.stop(t0 + dur + 0.01);
  }

  stop() {
    this.set(false);
  }
}
