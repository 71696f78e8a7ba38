// Rolling figures for the HUD: rates over a time window, medians over the last N samples.

export class RateWindow {
  private times: number[] = [];
  constructor(private readonly windowMs = 2000) {}

  tick(now: number): void {
    this.times.push(now);
    this.trim(now);
  }

  rate(now: number): number {
    this.trim(now);
    return this.times.length / (this.windowMs / 1000);
  }

  private trim(now: number): void {
    let i = 0;
    while (i < this.times.length && this.times[i] < now - this.windowMs) i++;
    if (i) this.times.splice(0, i);
  }
}

export class Samples {
  private values: number[] = [];
  constructor(private readonly size = 120) {}

  add(v: number): void {
    if (!Number.isFinite(v)) return;
    this.values.push(v);
    if (this.values.length > this.size) this.values.shift();
  }

  percentile(q: number): number | null {
    if (!this.values.length) return null;
    const s = [...this.values].sort((a, b) => a - b);
    const idx = Math.min(s.length - 1, Math.max(0, Math.round((q / 100) * (s.length - 1))));
    return s[idx];
  }
}
