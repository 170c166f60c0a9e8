/**
 * One VM's conversation with the package repository, as the handler has it during `install`: the
 * production `fetchTrustedKeys` and `chooseRepository` (src/linux/repository-fetch.ts) over the
 * production HTTP client (`realMachine().fetchText`: undici, retries, backoff, Retry-After), with
 * the budget per request and the deadline of a real `install`. Nothing else of the handler runs:
 * no checks, no files written, no package manager. mirror-simulation.ts compiles this file with
 * the project's Bun (as scripts/package.ts compiles the handler) and starts it hundreds of times.
 *
 *   mirror-client <baseUrl> <os-release file> <trusted fingerprint> [--wait]
 *
 * Prints one JSON line ({@link MirrorClientReport}) and exits 0 when the repository step succeeded,
 * else with the handler's exit code for the failure (20 repositoryUnavailable, 27 …). With
 * `--wait` it first prints `ready`, then waits for a line `go <ms>` on its standard input and
 * starts that many milliseconds later: hundreds of processes take seconds to start on a small
 * machine, while the VMs of a scale set start theirs each on its own CPU, at once.
 */
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { toFailure } from '../../src/failures.js';
import { systemClock } from '../../src/io/clock.js';
import type { Log, LogFields } from '../../src/io/log.js';
import { systemProcesses } from '../../src/io/processes.js';
import { operations } from '../../src/lifecycle/operations.js';
import { parseOsRelease } from '../../src/linux/checks/os-release.js';
import { fetchBudgetMs, throttledFetchBudgetMs } from '../../src/linux/installer.js';
import { realMachine } from '../../src/linux/machine.js';
import { planInstall } from '../../src/linux/plan.js';
import { chooseRepository, fetchTrustedKeys } from '../../src/linux/repository-fetch.js';

export interface MirrorClientReport {
  ok: boolean;
  /** The handler's exit code: 0, or the failure's. */
  code: number;
  /** The repository chosen, or the failure's message. */
  message: string;
  /** Epoch milliseconds. */
  startedAt: number;
  finishedAt: number;
  /** Each wait the HTTP client chose before retrying (the handler logs these as warnings). */
  retries: { at: number; delayMs: number; problem: string }[];
}

async function main(argv: readonly string[]): Promise<number> {
  const [baseUrl, osReleaseFile, fingerprint, wait] = argv;
  if (!baseUrl || !osReleaseFile || !fingerprint) {
    process.stderr.write(
      'usage: mirror-client <baseUrl> <os-release file> <fingerprint> [--wait]\n',
    );
    return 2;
  }
  if (wait === '--wait') {
    process.stdout.write('ready\n');
    const lines = createInterface({ input: process.stdin });
    const go = await new Promise<string>((resolve) => {
      lines.once('line', resolve);
      lines.once('close', () => resolve('go 0'));
    });
    lines.close();
    const delayMs = Number(/^go (\d+)$/.exec(go)?.[1] ?? 0);
    await new Promise((resolve) => setTimeout(resolve, delayMs));
  }
  const startedAt = Date.now();
  const retries: MirrorClientReport['retries'] = [];
  const note = (message: string, _fields?: LogFields) => {
    const retry = /^Retrying in (\d+) ms: (.*)$/.exec(message);
    if (retry) retries.push({ at: Date.now(), delayMs: Number(retry[1]), problem: retry[2] ?? '' });
  };
  const log: Log = {
    debug: note,
    info: note,
    warn: note,
    error: note,
    addSecret: () => undefined,
    close: async () => undefined,
  };
  const deadlineMs = operations.install.deadlineSeconds * 1000;
  const signal = AbortSignal.timeout(deadlineMs);
  const report = (ok: boolean, code: number, message: string): number => {
    const line: MirrorClientReport = {
      ok,
      code,
      message,
      startedAt,
      finishedAt: Date.now(),
      retries,
    };
    process.stdout.write(`${JSON.stringify(line)}\n`);
    return code;
  };
  try {
    const os = parseOsRelease(readFileSync(osReleaseFile, 'utf8'));
    const plan = planInstall(
      os,
      'x86_64',
      { repository: { baseUrl, keyFingerprints: [fingerprint] } },
      new Map(),
    );
    if (!plan) return report(false, 51, `no repository for ${os.id} ${os.versionId}`);
    const job = {
      machine: realMachine(systemProcesses, systemClock),
      log,
      signal,
      budgetMs: () => fetchBudgetMs(startedAt + deadlineMs - Date.now()),
      throttledBudgetMs: () => throttledFetchBudgetMs(startedAt + deadlineMs - Date.now()),
    };
    const keys = (await fetchTrustedKeys(job, plan)).trusted;
    const repository = await chooseRepository(job, plan);
    return report(
      true,
      0,
      `${repository.url} with keys ${keys.map((k) => k.fingerprint).join(', ')}`,
    );
  } catch (error) {
    const failure = toFailure(error);
    return report(false, failure.code, failure.detail);
  }
}

process.exitCode = await main(process.argv.slice(2));
