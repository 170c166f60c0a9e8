import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Clock } from '../io/clock.js';
import { listFolder, readFileIfExists, writeFileAtomic } from '../io/files.js';
import type { FetchOptions, FetchResult } from '../io/http.js';
import type { Processes, RunResult } from '../io/processes.js';
import { proxyEnvironment } from '../io/proxy-environment.js';
import type { LockProbe } from './package-lock.js';
import { systemLockProbe } from './package-lock-probe.js';
import type { Command } from './package-managers/index.js';

/**
 * What installing and removing the packages touches on the VM: files, programs, the repository
 * over HTTP (through the environment's proxy), and the package managers' locks. The real one is
 * the VM itself; unit tests pass fakes.
 */
export interface Machine {
  readFile(file: string): Promise<Buffer | undefined>;
  /** Replaces `file` atomically, creating its folder. */
  writeFile(file: string, content: string | Uint8Array, mode: number): Promise<void>;
  /** Removes `file`; nothing happens when it is already gone. */
  removeFile(file: string): Promise<void>;
  listDirectory(folder: string): Promise<string[]>;
  processes: Processes;
  /** Proxy variables every package-manager command gets (see proxy-environment.ts). */
  proxyEnvironment: Readonly<Record<string, string>>;
  fetchText(url: string, options: Omit<FetchOptions, 'clock'>): Promise<FetchResult>;
  lockProbe: LockProbe;
  clock: Clock;
}

export function realMachine(processes: Processes, clock: Clock): Machine {
  return {
    readFile: readFileIfExists,
    async writeFile(file, content, mode) {
      await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o755 });
      await writeFileAtomic(file, content, mode);
    },
    removeFile: (file) => fs.rm(file, { force: true }),
    listDirectory: listFolder,
    processes,
    proxyEnvironment: proxyEnvironment(process.env),
    // Loaded only when the repository is really contacted: a converged enable never needs it.
    fetchText: async (url, options) =>
      (await import('../io/http.js')).fetchText(url, { ...options, clock }),
    lockProbe: systemLockProbe,
    clock,
  };
}

/** Runs a package-manager command on the machine, with the proxy variables and its own environment. */
export function runOn(
  machine: Machine,
  command: Command,
  signal?: AbortSignal,
): Promise<RunResult> {
  const [file, ...args] = command.argv;
  return machine.processes.run(file ?? 'false', args, {
    ...(signal ? { signal } : {}),
    env: { ...machine.proxyEnvironment, ...command.env },
  });
}
