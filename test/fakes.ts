import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Clock } from '../src/io/clock.js';
import type { Log, LogFields } from '../src/io/log.js';
import type { Processes, RunResult } from '../src/io/processes.js';

/** A clock whose sleeps return at once and move its time forward. */
export function fakeClock(start = new Date()): Clock & { advance(ms: number): void } {
  let now = start.getTime();
  return {
    now: () => new Date(now),
    advance: (ms) => {
      now += ms;
    },
    sleep: async (ms, signal) => {
      if (signal?.aborted) throw signal.reason;
      now += ms;
      await new Promise((resolve) => setImmediate(resolve));
    },
  };
}

export interface MemoryLog extends Log {
  lines: { level: string; message: string; fields?: LogFields }[];
  secrets: Set<string>;
}

export function memoryLog(): MemoryLog {
  const lines: MemoryLog['lines'] = [];
  const secrets = new Set<string>();
  const write = (level: string) => (message: string, fields?: LogFields) => {
    lines.push({ level, message, ...(fields ? { fields } : {}) });
  };
  return {
    lines,
    secrets,
    debug: write('debug'),
    info: write('info'),
    warn: write('warn'),
    error: write('error'),
    addSecret: (secret) => secrets.add(secret),
    close: async () => undefined,
  };
}

/** Processes that answer from a script and record every call. */
export function fakeProcesses(
  answer: (
    file: string,
    args: readonly string[],
  ) => Partial<RunResult> | Promise<Partial<RunResult>>,
): Processes & { calls: { file: string; args: readonly string[] }[] } {
  const calls: { file: string; args: readonly string[] }[] = [];
  return {
    calls,
    async run(file, args) {
      calls.push({ file, args });
      const result = await answer(file, args);
      return { exitCode: 0, stdout: '', stderr: '', ...result };
    },
  };
}

/** Runs `body` with a new temporary folder, and always removes the folder. */
export async function withTemporaryFolder<T>(body: (dir: string) => Promise<T>): Promise<T> {
  const { dir, cleanup } = await temporaryFolder();
  try {
    return await body(dir);
  } finally {
    await cleanup();
  }
}

/** A temporary folder, removed by the returned cleanup. */
export async function temporaryFolder(): Promise<{ dir: string; cleanup(): Promise<void> }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'aad-handler-test-'));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/**
 * A machine's files in memory, as the installer's `Machine` reads and writes them: the map is the
 * file system (tests look at it directly), and a folder lists the files under it.
 */
export function memoryFiles(files: Map<string, Buffer>) {
  return {
    readFile: async (file: string) => files.get(file),
    writeFile: async (file: string, content: string | Uint8Array) => {
      files.set(file, Buffer.from(content));
    },
    removeFile: async (file: string) => {
      files.delete(file);
    },
    listDirectory: async (folder: string) =>
      [...files.keys()]
        .filter((file) => file.startsWith(`${folder}/`))
        .map((file) => file.slice(folder.length + 1)),
  };
}
