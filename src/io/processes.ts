import { execa } from 'execa';

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

/** The real implementation. A program that cannot be started is an exit code of 127, not a throw. */
export const systemProcesses: Processes = {
  async run(file, args, options = {}) {
    const result = await execa(file, args, {
      reject: false,
      stripFinalNewline: false,
      encoding: 'utf8',
      ...(options.input !== undefined ? { input: options.input } : { stdin: 'ignore' }),
      ...(options.signal ? { cancelSignal: options.signal } : {}),
      ...(options.env ? { env: options.env } : {}),
    });
    if (options.signal?.aborted) throw options.signal.reason;
    const exitCode = result.exitCode ?? (result.failed && result.code === 'ENOENT' ? 127 : 1);
    return { exitCode, stdout: String(result.stdout ?? ''), stderr: String(result.stderr ?? '') };
  },
};
