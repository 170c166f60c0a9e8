export interface RunResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Bytes written to the child's stdin. */
  input?: Uint8Array | string;
  /** Aborting kills the child (the command's deadline). */
  signal?: AbortSignal;
  /** Extra environment for the child, on top of the handler's own. */
  env?: Record<string, string>;
}

/**
 * Runs programs. Always an executable and an argument array, never a shell command line, so no
 * setting can inject shell syntax.
 */
export interface Processes {
  run(file: string, args: readonly string[], options?: RunOptions): Promise<RunResult>;
}

/** How long a child may take to exit after SIGTERM (the deadline passed) before it gets SIGKILL. */
const KILL_GRACE_MS = 5000;

/** A program that cannot be started, as a shell would say it: not found 127, not executable 126. */
const START_FAILURES: Partial<Record<string, number>> = { ENOENT: 127, EACCES: 126 };

/** How one runtime starts a child; everything else about running a program is shared. */
interface Child {
  /** Resolves when the child has exited and its output is read. */
  done: Promise<{ code: number | null; killedBy: string | null; stdout: string; stderr: string }>;
  /** Resolves when the child has exited, even if something it started still holds its output. */
  exited: Promise<unknown>;
  /** Stops reading the output of a child that was stopped. */
  abandon(): void;
  kill(signal: 'SIGTERM' | 'SIGKILL'): void;
}
type Spawn = (file: string, args: readonly string[], options: RunOptions) => Promise<Child>;

/**
 * The real implementation. The child inherits the handler's environment plus `options.env`; its
 * output is collected as UTF-8. A program that cannot be started is an exit code of 127 (not
 * found) or 126 (not executable), a child killed by a signal 128 + the signal's number, never a
 * throw; only an aborted `signal` throws its reason, after the child was stopped (SIGTERM, then
 * SIGKILL if it is still there 5 s later).
 *
 * The shipped executable starts children with the runtime's own `Bun.spawn`; under Node.js (the
 * unit tests) `node:child_process` does the same. No process library, and not node:child_process
 * in the shipped executable: loading them is most of a converged enable's cost
 * (docs/performance.md). The package tests run every command through the Bun side.
 */
export const systemProcesses: Processes = {
  async run(file, args, options = {}) {
    const { signal } = options;
    if (signal?.aborted) throw signal.reason;
    let child: Child;
    try {
      child = await (bunRuntime() ? bunSpawn : nodeSpawn)(file, args, options);
    } catch (error) {
      const startError = error as NodeJS.ErrnoException;
      return {
        exitCode: START_FAILURES[startError.code ?? ''] ?? 1,
        stdout: '',
        stderr: `${startError.message}\n`,
      };
    }
    let killTimer: ReturnType<typeof setTimeout> | undefined;
    let stopped: () => void = () => undefined;
    // Once stopped, the child's exit is enough: a process it started may keep its output open.
    const stoppedAndExited = new Promise<undefined>((resolve) => {
      stopped = () => void child.exited.then(() => resolve(undefined));
    });
    const stop = () => {
      child.kill('SIGTERM');
      killTimer = setTimeout(() => child.kill('SIGKILL'), KILL_GRACE_MS);
      stopped();
    };
    signal?.addEventListener('abort', stop, { once: true });
    try {
      const finished = await Promise.race([child.done, stoppedAndExited]);
      if (signal?.aborted || !finished) {
        child.abandon();
        throw signal?.reason;
      }
      const { code, killedBy, stdout, stderr } = finished;
      return { exitCode: code ?? 128 + (await signalNumber(killedBy)), stdout, stderr };
    } finally {
      clearTimeout(killTimer);
      signal?.removeEventListener('abort', stop);
    }
  },
};

/** The parts of Bun's API used here (the project does not depend on Bun's type package). */
interface BunRuntime {
  spawn(
    argv: string[],
    options: {
      env: Record<string, string | undefined>;
      stdin: 'ignore' | Blob;
      stdout: 'pipe';
      stderr: 'pipe';
    },
  ): {
    exited: Promise<number>;
    exitCode: number | null;
    signalCode: string | null;
    stdout: ReadableStream<Uint8Array>;
    stderr: ReadableStream<Uint8Array>;
    kill(signal: string): void;
  };
}

function bunRuntime(): BunRuntime | undefined {
  return (globalThis as { Bun?: BunRuntime }).Bun;
}

function childEnvironment(options: RunOptions): Record<string, string | undefined> {
  return options.env ? { ...process.env, ...options.env } : process.env;
}

/** `Bun.spawn`; throws (with `code`) when the program cannot be started. */
const bunSpawn: Spawn = async (file, args, options) => {
  const bun = bunRuntime() as BunRuntime;
  const child = bun.spawn([file, ...args], {
    env: childEnvironment(options),
    stdin: options.input === undefined ? 'ignore' : new Blob([options.input]),
    stdout: 'pipe',
    stderr: 'pipe',
  });
  const done = Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ]).then(([stdout, stderr]) => ({
    code: child.signalCode ? null : child.exitCode,
    killedBy: child.signalCode,
    stdout,
    stderr,
  }));
  return {
    done,
    exited: child.exited,
    // The process exits when the command ends; nothing else waits on these reads.
    abandon: () => undefined,
    kill: (signal) => child.kill(signal),
  };
};

/** `node:child_process`, loaded when first used; rejects when the program cannot be started. */
const nodeSpawn: Spawn = async (file, args, options) => {
  const { spawn } = await import('node:child_process');
  const child = spawn(file, args, {
    env: childEnvironment(options),
    stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    windowsHide: true,
  });
  const stdout: Buffer[] = [];
  const stderr: Buffer[] = [];
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.stdout?.on('data', (chunk: Buffer) => stdout.push(chunk));
  child.stderr?.on('data', (chunk: Buffer) => stderr.push(chunk));
  if (options.input !== undefined && child.stdin) {
    // A child that exits without reading its input closes the pipe: not a failure of ours.
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.input);
  }
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('spawn', () => {
      child.off('error', reject);
      resolve({
        done: new Promise((finished) =>
          child.once('close', (code, killedBy) =>
            finished({
              code,
              killedBy,
              stdout: Buffer.concat(stdout).toString('utf8'),
              stderr: Buffer.concat(stderr).toString('utf8'),
            }),
          ),
        ),
        exited,
        abandon: () => {
          child.stdout?.destroy();
          child.stderr?.destroy();
        },
        kill: (signal) => child.kill(signal),
      });
    });
  });
};

/** A signal's number (SIGKILL → 9), 0 when unknown; node:os is loaded only for this rare case. */
async function signalNumber(name: string | null): Promise<number> {
  if (!name) return 0;
  const { constants } = await import('node:os');
  return (constants.signals as Partial<Record<string, number>>)[name] ?? 0;
}
