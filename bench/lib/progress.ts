/**
 * Progress on stderr while a benchmark runs: a redrawn bar when stderr is a terminal,
 * plain lines otherwise (CI logs). It prints labels only (scenario, arm, parameters),
 * never request content.
 */
export interface Progress {
  /** Announce what runs now (does not advance the bar). */
  status(label: string): void;
  /** One planned measurement finished. */
  tick(): void;
  /** Add planned measurements (scenarios announce their plan as they start). */
  plan(steps: number): void;
  /** A line that must stay visible (a note or a skip). */
  line(text: string): void;
  done(): void;
}

interface Sink {
  readonly isTTY?: boolean;
  readonly columns?: number;
  write(chunk: string): unknown;
}

export function createProgress(options: { quiet?: boolean; stream?: Sink } = {}): Progress {
  const stream: Sink = options.stream ?? process.stderr;
  const quiet = options.quiet === true;
  const tty = stream.isTTY === true;
  let total = 0;
  let doneSteps = 0;
  let current = '';
  let lastPlain = '';
  const started = Date.now();

  const draw = (): void => {
    if (quiet) return;
    if (tty) {
      const width = Math.max(10, Math.min(30, (stream.columns ?? 80) - 60));
      const frac = total > 0 ? Math.min(1, doneSteps / total) : 0;
      const filled = Math.round(frac * width);
      const secs = Math.round((Date.now() - started) / 1000);
      const text = `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${String(Math.round(frac * 100)).padStart(3)}% ${secs}s ${current}`;
      const max = (stream.columns ?? 120) - 1;
      stream.write(`\r\x1b[2K${text.length > max ? text.slice(0, max) : text}`);
    }
  };

  return {
    status(label) {
      current = label;
      if (quiet) return;
      if (tty) draw();
      else {
        // Plain mode: one line per comparison phase, not per round.
        const head = label.replace(/: (round \d+\/\d+ |warm-up ).*$/, '');
        if (head !== lastPlain) {
          lastPlain = head;
          stream.write(`[${doneSteps}/${total}] ${head}\n`);
        }
      }
    },
    tick() {
      doneSteps++;
      draw();
    },
    plan(steps) {
      total += steps;
      draw();
    },
    line(text) {
      if (quiet) return;
      if (tty) stream.write(`\r\x1b[2K${text}\n`);
      else stream.write(`${text}\n`);
      draw();
    },
    done() {
      if (!quiet && tty) stream.write('\r\x1b[2K');
    },
  };
}
