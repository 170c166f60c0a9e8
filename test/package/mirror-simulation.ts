/**
 * A scale set behind one NAT address against one rate-limited mirror: hundreds of handler
 * processes start within a second and each runs the handler's real repository step
 * (mirror-client.ts: the production key fetch and repository probe over the production HTTP
 * client) against the repository stand-in (repos.ts) served with a token bucket per client
 * address — all of them share one, 127.0.0.1, as VMs behind one NAT address share theirs.
 * packages.microsoft.com allows 4,000 requests per 5 minutes per client; the default here scales
 * that down to 20 per second after a burst of 40, so 200 processes finish in about a minute.
 *
 *   const result = await runMirrorSimulation({ processes: 200 });
 *   for (const line of describeSimulation(result)) console.log(line);
 *
 * Used by test/package/faults-mirror.test.ts, and runnable on its own as a benchmark:
 *
 *   node --import tsx test/package/mirror-simulation.ts [processes] [perSecond] [burst]
 *
 * Why not 200 whole `install`s: each would need its own VM root, world and apt, which this
 * 2-core machine cannot run at once; the repository step is the part of `install` that talks to
 * packages.microsoft.com itself (apt's own downloads are apt's, see faults-mirror.test.ts).
 * Each process is a Bun-compiled executable of mirror-client.ts (about 70 ms of CPU and 50 MB),
 * started with an environment of its own (PATH only: no proxy of this machine).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { promises as fs, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { osReleaseFixture } from '../fixtures.js';
import { AGENT_PATH, REPO_ROOT, runTool } from './agent-driver.js';
import type { MirrorClientReport } from './mirror-client.js';
import {
  type PmcRepository,
  pmcRepository,
  type RateLimit,
  type RepoRequest,
  serveRepository,
} from './repos.js';

/** packages.microsoft.com's limit, scaled down: the rate 1.5 × theirs, a window of 2 s (not 300). */
export const SCALED_PMC_RATE_LIMIT: RateLimit = { perSecond: 20, burst: 40 };

export interface MirrorSimulationOptions {
  /** How many handler processes. Default 200. */
  processes?: number;
  /** They are started evenly within this time. Default 1000 ms. */
  startWithinMs?: number;
  /** The mirror's limit per client address. Default {@link SCALED_PMC_RATE_LIMIT}. */
  rateLimit?: RateLimit;
  /**
   * The VMs' distribution (a fixture of test/fixtures/os-release). Default `almalinux-9.4`: a
   * RHEL flavour, so each process fetches both key files and probes `almalinux/9/prod` (404)
   * and `rhel/9/prod` (200) for repository metadata: four requests without throttling.
   */
  osRelease?: string;
  /** A repository to serve (it needs `rhel/9/prod`). Default: one made for the run. */
  repository?: PmcRepository;
  /** Processes still running then are killed (and count as failed). Default 300 s. */
  timeoutMs?: number;
}

export interface SimulatedProcess {
  index: number;
  /** The process's exit code (null when killed). */
  exitCode: number | null;
  /** What it printed (undefined when it printed nothing readable). */
  report: MirrorClientReport | undefined;
  /** Milliseconds from the start of the simulation. */
  startedMs: number;
  finishedMs: number;
  /** The requests the mirror got from it, and how many it answered 429 (rate limit). */
  requests: number;
  throttled: number;
  /** All its waits before retrying, added up, and the longest. */
  waitedMs: number;
  longestWaitMs: number;
  stderr: string;
}

/** A retry that came sooner after a 429 than the `Retry-After` the mirror sent with it. */
export interface EarlyRetry {
  index: number;
  path: string;
  retryAfterSeconds: number;
  /** Between the 429's request and the retry, at the mirror. */
  gapMs: number;
}

export interface MirrorSimulationResult {
  processes: SimulatedProcess[];
  rateLimit: RateLimit;
  /** From the first start until the last process ended. */
  wallMs: number;
  /** From the first start to the last. */
  startSpreadMs: number;
  /** Every request the mirror got, oldest first. */
  requests: RepoRequest[];
  throttled: number;
  requestsPerProcess: { median: number; max: number };
  /** The longest any one process spent waiting to retry (all its waits), and the longest wait. */
  longestTotalWaitMs: number;
  longestWaitMs: number;
  earlyRetries: EarlyRetry[];
  /** Requests per second the mirror served (not 429) over the run. */
  servedPerSecond: number;
}

const CLIENT_SOURCE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'mirror-client.ts');

let compiled: Promise<string> | undefined;

/**
 * mirror-client.ts as a Bun-compiled executable (once per process, in a temporary folder removed
 * at exit), built like the handler's: `bun build --compile --target=bun-linux-x64-baseline`.
 */
export function mirrorClientExecutable(): Promise<string> {
  compiled ??= (async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'aad-mirror-client-'));
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
    const outfile = path.join(dir, 'mirror-client');
    const build = await runTool(
      path.join(REPO_ROOT, 'node_modules', '.bin', 'bun'),
      [
        'build',
        '--compile',
        '--target=bun-linux-x64-baseline',
        `--outfile=${outfile}`,
        CLIENT_SOURCE,
      ],
      { cwd: REPO_ROOT, env: { PATH: AGENT_PATH, HOME: dir }, timeoutMs: 180_000 },
    );
    if (build.exitCode !== 0) {
      throw new Error(`bun build of mirror-client.ts failed: ${build.stderr}${build.stdout}`);
    }
    return outfile;
  })();
  compiled.catch(() => {
    compiled = undefined;
  });
  return compiled;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return 0;
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[middle] ?? 0)
    : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2;
}

/** `vm-007` for process 7: the folder of the mirror each process is pointed at. */
function clientFolder(index: number): string {
  return `vm-${String(index).padStart(3, '0')}`;
}

/**
 * Retries, per process and URL, that reached the mirror sooner after a 429 than its
 * `Retry-After` said (measured between the two requests' arrival at the mirror).
 */
export function earlyRetries(requests: readonly RepoRequest[]): EarlyRetry[] {
  const early: EarlyRetry[] = [];
  const last = new Map<string, RepoRequest>();
  for (const request of requests) {
    const previous = last.get(request.path);
    last.set(request.path, request);
    if (previous?.status !== 429 || previous.retryAfter === undefined) continue;
    const gapMs = Date.parse(request.at) - Date.parse(previous.at);
    if (gapMs < previous.retryAfter * 1000) {
      const index = Number(/^\/vm-(\d+)\//.exec(request.path)?.[1] ?? -1);
      early.push({ index, path: request.path, retryAfterSeconds: previous.retryAfter, gapMs });
    }
  }
  return early;
}

/** Runs the simulation (see the file comment); everything it started is stopped and removed. */
export async function runMirrorSimulation(
  options: MirrorSimulationOptions = {},
): Promise<MirrorSimulationResult> {
  const count = options.processes ?? 200;
  const startWithinMs = options.startWithinMs ?? 1000;
  const rateLimit = options.rateLimit ?? SCALED_PMC_RATE_LIMIT;
  const timeoutMs = options.timeoutMs ?? 300_000;
  const executable = await mirrorClientExecutable();
  const repository = options.repository ?? (await pmcRepository({ apt: [], rpm: ['rhel/9/prod'] }));
  // Each process gets a folder of its own (a symbolic link to the repository), so that the
  // mirror's records tell the processes apart although they all come from one address.
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'aad-mirror-simulation-'));
  const children = new Set<ChildProcess>();
  try {
    const served = path.join(work, 'served');
    await fs.mkdir(served);
    for (let index = 0; index < count; index++) {
      await fs.symlink(repository.root, path.join(served, clientFolder(index)));
    }
    const osReleaseFile = path.join(work, 'os-release');
    await fs.writeFile(osReleaseFile, await osReleaseFixture(options.osRelease ?? 'almalinux-9.4'));
    // In a process of its own, so that starting hundreds of processes does not delay its answers.
    const server = await serveRepository(served, { rateLimit, launcher: (argv) => argv });
    try {
      // Start every process and let it get ready (which takes seconds for hundreds on a small
      // machine), then tell each when to begin: all within `startWithinMs`.
      const spawned: {
        child: ChildProcess;
        ready: Promise<void>;
        done: Promise<SimulatedProcess>;
      }[] = [];
      let goAt = Number.POSITIVE_INFINITY;
      for (let index = 0; index < count; index++) {
        const child = spawn(
          executable,
          [
            `${server.url}/${clientFolder(index)}`,
            osReleaseFile,
            repository.signingKey.fingerprint,
            '--wait',
          ],
          { env: { PATH: AGENT_PATH }, stdio: ['pipe', 'pipe', 'pipe'] },
        );
        children.add(child);
        child.stdin?.on('error', () => undefined);
        let stdout = '';
        let stderr = '';
        let markReady: () => void = () => undefined;
        const ready = new Promise<void>((resolve) => {
          markReady = resolve;
        });
        child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
          stdout += chunk;
          if (stdout.startsWith('ready\n')) markReady();
        });
        child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
          stderr += chunk;
        });
        child.once('error', (error) => {
          stderr += String(error);
        });
        const kill = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
        const done = new Promise<SimulatedProcess>((resolve) => {
          child.once('close', (exitCode) => {
            clearTimeout(kill);
            markReady();
            children.delete(child);
            const closedAt = Date.now();
            let report: MirrorClientReport | undefined;
            try {
              report = JSON.parse(stdout.trim().split('\n').at(-1) ?? '') as MirrorClientReport;
            } catch {
              report = undefined;
            }
            const waits = report?.retries.map((retry) => retry.delayMs) ?? [];
            resolve({
              index,
              exitCode,
              report,
              startedMs: (report?.startedAt ?? goAt) - goAt,
              finishedMs: (report?.finishedAt ?? closedAt) - goAt,
              requests: 0,
              throttled: 0,
              waitedMs: waits.reduce((sum, wait) => sum + wait, 0),
              longestWaitMs: Math.max(0, ...waits),
              stderr: stderr.slice(-2000),
            });
          });
        });
        spawned.push({ child, ready, done });
      }
      await Promise.all(spawned.map((one) => one.ready));
      goAt = Date.now();
      for (const [index, { child }] of spawned.entries()) {
        child.stdin?.end(`go ${Math.round((index * startWithinMs) / count)}\n`);
      }
      const running = spawned.map((one) => one.done);
      const processes = await Promise.all(running);
      const wallMs = Math.max(...processes.map((p) => p.finishedMs));
      const requests = await server.requests();
      for (const request of requests) {
        const index = Number(/^\/vm-(\d+)\//.exec(request.path)?.[1] ?? -1);
        const owner = processes[index];
        if (!owner) continue;
        owner.requests += 1;
        if (request.throttled) owner.throttled += 1;
      }
      const servedRequests = requests.filter((request) => !request.throttled).length;
      return {
        processes,
        rateLimit,
        wallMs,
        startSpreadMs: Math.max(...processes.map((p) => p.startedMs)),
        requests,
        throttled: requests.filter((request) => request.throttled).length,
        requestsPerProcess: {
          median: median(processes.map((p) => p.requests)),
          max: Math.max(...processes.map((p) => p.requests)),
        },
        longestTotalWaitMs: Math.max(...processes.map((p) => p.waitedMs)),
        longestWaitMs: Math.max(...processes.map((p) => p.longestWaitMs)),
        earlyRetries: earlyRetries(requests),
        servedPerSecond: servedRequests / (wallMs / 1000),
      };
    } finally {
      await server.close();
    }
  } finally {
    for (const child of children) child.kill('SIGKILL');
    await fs.rm(work, { recursive: true, force: true });
    if (!options.repository) await repository.remove();
  }
}

/** The figures, one per line, for a test's diagnostics or the benchmark's output. */
export function describeSimulation(result: MirrorSimulationResult): string[] {
  const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
  const ok = result.processes.filter((p) => p.exitCode === 0).length;
  const durations = result.processes.map((p) => p.finishedMs - p.startedMs);
  return [
    `${result.processes.length} handler processes started within ${seconds(result.startSpreadMs)} against one mirror limited to ${result.rateLimit.perSecond} requests/s (burst ${result.rateLimit.burst}) per client address`,
    `all finished after ${seconds(result.wallMs)}; ${ok} succeeded; per process ${seconds(median(durations))} median, ${seconds(Math.max(...durations))} longest`,
    `requests: ${result.requests.length} in total, per process ${result.requestsPerProcess.median} median, ${result.requestsPerProcess.max} max; the mirror served ${result.servedPerSecond.toFixed(1)}/s`,
    `429s received: ${result.throttled} in total`,
    `waiting: the longest any process waited in all was ${seconds(result.longestTotalWaitMs)}, the longest single wait ${seconds(result.longestWaitMs)}`,
    `retries sooner than Retry-After: ${result.earlyRetries.length}`,
  ];
}

const THIS_FILE = fileURLToPath(import.meta.url);
if (process.argv[1] && path.resolve(process.argv[1]) === THIS_FILE) {
  const [processes, perSecond, burst] = process.argv.slice(2).map(Number);
  const result = await runMirrorSimulation({
    ...(processes ? { processes } : {}),
    rateLimit: {
      perSecond: perSecond || SCALED_PMC_RATE_LIMIT.perSecond,
      burst: burst || SCALED_PMC_RATE_LIMIT.burst,
    },
  });
  for (const line of describeSimulation(result)) process.stdout.write(`${line}\n`);
  const failed = result.processes.filter((p) => p.exitCode !== 0);
  for (const p of failed.slice(0, 5)) {
    process.stdout.write(
      `process ${p.index} failed (exit ${p.exitCode}): ${p.report?.message ?? p.stderr}\n`,
    );
  }
  process.exitCode = failed.length > 0 ? 1 : 0;
}
