/**
 * A changed world for the built handler, without test hooks in the handler: a private mount and
 * network namespace (`unshare --mount --net`) in which
 *
 * - `lo` is up and 169.254.169.254/32 is one of its addresses, so a mock IMDS answers there on
 *   port 80, scripted per test, and records every request it gets;
 * - files are replaced, created or made absent (e.g. /etc/os-release, /usr/lib/os-release,
 *   /proc/meminfo, /usr/bin/dpkg-query, /var/lib/waagent/<dir>), by bind mounts or by overlays on
 *   their directory, so the handler reads the real paths and sees the test's world;
 * - optionally a recording forward proxy listens on 127.0.0.1 (absolute-URI requests and CONNECT
 *   tunnels, forwarded inside the namespace), to prove what went through a proxy and what did not.
 *
 * One process, world-keeper.ts, makes the namespaces (it is started by `unshare`), sets them up and
 * runs both servers; commands enter its namespaces with `nsenter`. Closing the world ends every
 * process still inside it and then that one, and with the last process inside them the
 * namespaces, their mounts and addresses vanish. Nothing on the machine changes; nothing here
 * touches `process.env` or the cwd.
 *
 * With `root` (a throwaway root folder standing for the VM, e.g. from roots.ts `vmRoot`), commands
 * run chrooted into it, in the same namespaces: the world mounts a fresh proc on <root>/proc (of
 * the machine's pid namespace, so /proc/locks and /proc/<pid>/comm show every process, as on a
 * VM), /dev on <root>/dev (with a /dev/shm of its own) and each of `binds` (e.g. the agent
 * sandbox, whose HandlerEnvironment.json names host paths) at the same path inside, and the file
 * options apply to the root's files. All of it is mounted in the world's mount namespace only.
 *
 *   await withWorld({ osRelease: UBUNTU_2204, meminfo: meminfo(944_000), imds: { [TOKEN_PATH]: [imdsToken('m')] } },
 *     async (world) => {
 *       const run = await world.run(handler, 'install', { seq: 0 });
 *       const requests = await world.imdsRequests(TOKEN_PATH);
 *     });
 */
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import {
  AGENT_PATH,
  type CommandRun,
  type HandlerInstance,
  type Launcher,
  type Operation,
  type RunOptions,
  runTool,
  stopChild,
} from './agent-driver.js';

export const IMDS_ADDRESS = '169.254.169.254';
/** The managed-identity token endpoint (its path; the query is the handler's). */
export const TOKEN_PATH = '/metadata/identity/oauth2/token';
/** The cloud the VM is in, as text (`format=text`). */
export const AZ_ENVIRONMENT_PATH = '/metadata/instance/compute/azEnvironment';

// ---------------------------------------------------------------------------------------------
// The mock IMDS script
// ---------------------------------------------------------------------------------------------

/**
 * One answer of the mock IMDS: a response (after `delayMs`), an accepted request never answered, a
 * response whose body never ends, or bytes that are not HTTP.
 */
export type ImdsReply =
  | { status: number; body?: string; headers?: Record<string, string>; delayMs?: number }
  | { hang: true }
  | {
      status: number;
      headers?: Record<string, string>;
      /** A body that never ends: `chunk` again and again, every `intervalMs` (0: as fast as read). */
      endless: { chunk: string; intervalMs: number };
    }
  | {
      /** Bytes written to the connection as they are (not HTTP, or broken HTTP), then closed. */
      raw: string;
    };

/**
 * Answers per request path (without the query): the n-th request to a path gets the n-th reply,
 * the last reply repeats. Paths not in the script: azEnvironment answers `AzurePublicCloud`,
 * anything else 404. As the real IMDS does, a request without `Metadata: true` or with
 * `X-Forwarded-For` gets 400 and consumes no reply.
 */
export type ImdsScript = Record<string, readonly ImdsReply[]>;

const JSON_HEADERS = { 'Content-Type': 'application/json; charset=utf-8' };

/** A JWT-looking token whose signature part is `marker` (so the marker appears in the raw token). */
export function fakeAccessToken(marker: string): string {
  const encode = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const header = encode({ typ: 'JWT', alg: 'RS256', x5t: 'mock', kid: 'mock' });
  const payload = encode({
    aud: 'ce6ff14a-7fdc-4685-bbe0-f6afdfcfa8e0',
    iss: 'https://sts.windows.net/00000000-0000-0000-0000-000000000000/',
    oid: '11111111-1111-1111-1111-111111111111',
    xms_mirid: '/subscriptions/0/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/vm',
  });
  return `${header}.${payload}.${marker}`;
}

/** 200 with a token as the identity endpoint returns it; `marker` must be base64url characters. */
export function imdsToken(marker: string): ImdsReply {
  const now = Math.floor(Date.now() / 1000);
  return {
    status: 200,
    headers: JSON_HEADERS,
    body: JSON.stringify({
      access_token: fakeAccessToken(marker),
      client_id: '22222222-2222-2222-2222-222222222222',
      expires_in: '86399',
      expires_on: String(now + 86399),
      ext_expires_in: '86399',
      not_before: String(now - 300),
      resource: 'ce6ff14a-7fdc-4685-bbe0-f6afdfcfa8e0',
      token_type: 'Bearer',
    }),
  };
}

/** What the identity endpoint answers on a VM without a system-assigned identity. */
export const IDENTITY_NOT_FOUND: ImdsReply = {
  status: 400,
  headers: JSON_HEADERS,
  body: '{"error":"invalid_request","error_description":"Identity not found"}',
};

/** An error status (404, 410, 429, 500, …), with `Retry-After` seconds when given. */
export function imdsError(status: number, options: { retryAfter?: number } = {}): ImdsReply {
  return {
    status,
    headers: {
      ...JSON_HEADERS,
      ...(options.retryAfter === undefined ? {} : { 'Retry-After': String(options.retryAfter) }),
    },
    body: JSON.stringify({ error: `mock status ${status}` }),
  };
}

/** A plain-text leaf, as `format=text` returns it. */
export function imdsText(text: string): ImdsReply {
  return { status: 200, headers: { 'Content-Type': 'text/plain; charset=utf-8' }, body: text };
}

/** Accepts the request and never answers. */
export const IMDS_HANG: ImdsReply = { hang: true };

/** The same reply, sent after `delayMs`. */
export function slow(delayMs: number, reply: ImdsReply): ImdsReply {
  if ('hang' in reply || 'raw' in reply || 'endless' in reply) return reply;
  return { ...reply, delayMs };
}

/** 200 whose body never ends: `chunk` sent again and again, every `intervalMs` (0: as fast as read). */
export function imdsEndless(chunk: string, intervalMs = 0): ImdsReply {
  return { status: 200, headers: JSON_HEADERS, endless: { chunk, intervalMs } };
}

/** Bytes that are not a well-formed HTTP answer, written to the connection, which is then closed. */
export function imdsRaw(bytes: string): ImdsReply {
  return { raw: bytes };
}

// ---------------------------------------------------------------------------------------------
// Fixtures: /proc/meminfo
// ---------------------------------------------------------------------------------------------

/**
 * A /proc/meminfo as a 5.15 kernel on an Azure VM writes it, with `MemTotal` in kB and the
 * other fields scaled from it.
 */
export function meminfo(memTotalKb: number): string {
  const part = (fraction: number) => Math.round(memTotalKb * fraction);
  const rows: [string, number | string][] = [
    ['MemTotal', memTotalKb],
    ['MemFree', part(0.31)],
    ['MemAvailable', part(0.72)],
    ['Buffers', part(0.03)],
    ['Cached', part(0.4)],
    ['SwapCached', 0],
    ['Active', part(0.22)],
    ['Inactive', part(0.32)],
    ['Active(anon)', part(0.01)],
    ['Inactive(anon)', part(0.12)],
    ['Active(file)', part(0.21)],
    ['Inactive(file)', part(0.2)],
    ['Unevictable', part(0.03)],
    ['Mlocked', part(0.03)],
    ['SwapTotal', 0],
    ['SwapFree', 0],
    ['Dirty', 132],
    ['Writeback', 0],
    ['AnonPages', part(0.13)],
    ['Mapped', part(0.09)],
    ['Shmem', part(0.002)],
    ['KReclaimable', part(0.05)],
    ['Slab', part(0.09)],
    ['SReclaimable', part(0.05)],
    ['SUnreclaim', part(0.04)],
    ['KernelStack', 2944],
    ['PageTables', part(0.004)],
    ['NFS_Unstable', 0],
    ['Bounce', 0],
    ['WritebackTmp', 0],
    ['CommitLimit', part(0.5)],
    ['Committed_AS', part(0.6)],
    ['VmallocTotal', 34359738367],
    ['VmallocUsed', 22812],
    ['VmallocChunk', 0],
    ['Percpu', 920],
    ['HardwareCorrupted', 0],
    ['AnonHugePages', 0],
    ['ShmemHugePages', 0],
    ['ShmemPmdMapped', 0],
    ['FileHugePages', 0],
    ['FilePmdMapped', 0],
    ['HugePages_Total', '0'],
    ['HugePages_Free', '0'],
    ['HugePages_Rsvd', '0'],
    ['HugePages_Surp', '0'],
    ['Hugepagesize', 2048],
    ['Hugetlb', 0],
    ['DirectMap4k', 83904],
    ['DirectMap2M', part(1.05)],
  ];
  // The kernel's format: the label padded to 16, the value to 8, "kB" except for the HugePages_ counts.
  return rows
    .map(([name, value]) =>
      typeof value === 'string'
        ? `${`${name}:`.padEnd(16)}${value.padStart(8)}`
        : `${`${name}:`.padEnd(16)}${String(value).padStart(8)} kB`,
    )
    .map((line) => `${line}\n`)
    .join('');
}

// ---------------------------------------------------------------------------------------------
// The world
// ---------------------------------------------------------------------------------------------

export interface WorldOptions {
  /** /etc/os-release (a regular file in the world; on Debian it is a symlink). `null`: absent. */
  osRelease?: string | null;
  /** /usr/lib/os-release; defaults to `osRelease` when that is a string. `null`: absent. */
  usrLibOsRelease?: string | null;
  /** /proc/meminfo. */
  meminfo?: string;
  /** Any other absolute path: its content, or `null` for absent. */
  files?: Record<string, string | null>;
  /** Absolute paths made absent (e.g. /usr/bin/dpkg-query). */
  hide?: readonly string[];
  /** Empty directories that exist in the world (e.g. under /var/lib/waagent). */
  dirs?: readonly string[];
  /** The mock IMDS: its script, or 'refused' for no listener (connections are refused). */
  imds?: ImdsScript | 'refused';
  /** Start the recording forward proxy. */
  proxy?: boolean;
  /**
   * A root folder on the machine that commands run chrooted into (see the file comment); the
   * options above then name paths inside it. Files that exist in the root are replaced by bind
   * mounts, so writes elsewhere in their folder land in the root, where the test can read them.
   * Files created, made absent or changing type need an overlay on their folder: what is written
   * below that folder then stays in the world (write such files into the root instead).
   */
  root?: string;
  /**
   * Folders of the machine shown at the same absolute path inside `root` (created there when
   * missing): the agent sandbox, whose files name host paths. File options must not point below
   * them.
   */
  binds?: readonly string[];
}

/** A request the mock IMDS or the proxy received. */
export interface RecordedRequest {
  server: 'imds' | 'proxy';
  at: string;
  method: string;
  /** IMDS: path and query. Proxy: the request-target (absolute URI, or host:port for CONNECT). */
  url: string;
  /** Lower-cased names, as Node parses them. */
  headers: Record<string, string | string[] | undefined>;
  /** What the server did: the status sent, 'hang', 'rejected …', 'tunnel', 'forwarded …'. */
  reply: string;
}

/** What world-keeper.ts is given (as JSON). */
export interface KeeperConfig {
  /** Commands run in order inside the new namespaces before the servers start. */
  setup: string[][];
  recordFile: string;
  imds: ImdsScript | 'refused';
  proxy: boolean;
}

export interface World {
  /** The world's temporary folder on the host (fixtures and the request records). */
  readonly dir: string;
  /** The keeper's pid: the namespaces to enter. */
  readonly pid: number;
  /** `http://127.0.0.1:<port>` when started with `proxy: true`. */
  readonly proxyUrl: string | undefined;
  /** http_proxy, https_proxy, HTTP_PROXY, HTTPS_PROXY set to the proxy (no no_proxy). */
  proxyEnvironment(): Record<string, string>;
  /** The root commands run chrooted into, when the world has one. */
  readonly root: string | undefined;
  /** The argv that runs `argv` inside the world (chrooted into `root` when it has one), in `cwd`. */
  wrap(argv: readonly string[], cwd: string): string[];
  /**
   * The argv that runs `argv` in the world's namespaces without the chroot: for helpers of the
   * machine (e.g. `serveRepository(dir, { launcher: world.wrapOutside })`) that must be reachable
   * on the world's network. The same as `wrap` for a world without a root.
   */
  wrapOutside(argv: readonly string[], cwd: string): string[];
  /** Runs a handler command inside the world, exactly as the driver's `run` does outside it. */
  run(handler: HandlerInstance, operation: Operation, options: RunOptions): Promise<CommandRun>;
  /**
   * Runs any program inside the world, chrooted into the root when there is one (cwd /, PATH the
   * agent's, LANG=C unless `env` says).
   */
  exec(
    argv: readonly string[],
    options?: { env?: Record<string, string>; input?: string; timeoutMs?: number },
  ): Promise<{ stdout: string; stderr: string; exitCode: number }>;
  /** Requests to the mock IMDS so far, optionally only those to one path. */
  imdsRequests(pathname?: string): Promise<RecordedRequest[]>;
  /** Requests to the proxy so far. */
  proxyRequests(): Promise<RecordedRequest[]>;
  close(): Promise<void>;
}

const KEEPER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'world-keeper.ts');
const TSX_LOADER = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;

/** Runs `body` in a new world and always closes it. */
export async function withWorld<T>(
  options: WorldOptions,
  body: (world: World) => Promise<T>,
): Promise<T> {
  const world = await createWorld(options);
  try {
    return await body(world);
  } finally {
    await world.close();
  }
}

export async function createWorld(options: WorldOptions): Promise<World> {
  const root = options.root === undefined ? undefined : path.resolve(options.root);
  if (root !== undefined && !(await fs.stat(root).catch(() => undefined))?.isDirectory()) {
    throw new Error(`a world's root must be an existing folder: ${root}`);
  }
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'aad-world-'));
  let keeper: ChildProcessWithoutNullStreams | undefined;
  try {
    const config: KeeperConfig = {
      setup: await setupCommands(dir, options),
      recordFile: path.join(dir, 'requests.jsonl'),
      imds: options.imds ?? {},
      proxy: options.proxy ?? false,
    };
    const configFile = path.join(dir, 'keeper.json');
    await fs.writeFile(configFile, JSON.stringify(config));
    keeper = spawn(
      'unshare',
      [
        '--mount',
        '--net',
        '--propagation',
        'private',
        '--',
        process.execPath,
        '--import',
        TSX_LOADER,
        KEEPER,
        configFile,
      ],
      { cwd: dir, env: { PATH: AGENT_PATH, LANG: 'C' }, stdio: ['pipe', 'pipe', 'pipe'] },
    );
    const ready = await keeperReady(keeper);
    return openWorld(dir, keeper, ready, config.recordFile, root);
  } catch (error) {
    if (keeper) await stopKeeper(keeper);
    await fs.rm(dir, { recursive: true, force: true });
    throw error;
  }
}

function openWorld(
  dir: string,
  keeper: ChildProcessWithoutNullStreams,
  ready: { pid: number; proxyPort: number | null },
  recordFile: string,
  root: string | undefined,
): World {
  const proxyUrl = ready.proxyPort === null ? undefined : `http://127.0.0.1:${ready.proxyPort}`;
  const enter = ['nsenter', `--target=${ready.pid}`, '--mount', '--net', '--'];
  // `env -C` changes directory by path inside the namespaces: nsenter's --wd keeps a directory
  // opened outside them, which getcwd() then cannot name.
  const wrapOutside = (argv: readonly string[], cwd: string) => [
    ...enter,
    '/usr/bin/env',
    '-C',
    cwd,
    ...argv,
  ];
  // chroot(8) runs inside the namespaces, so it resolves the root there, with the world's mounts
  // on it (nsenter --root=<dir> would open the folder in the caller's namespace, without them).
  // The env after it is the root's own.
  const wrap = (argv: readonly string[], cwd: string) =>
    root === undefined
      ? wrapOutside(argv, cwd)
      : [...enter, '/usr/sbin/chroot', root, '/usr/bin/env', '-C', cwd, ...argv];
  const records = async () => {
    const text = await fs.readFile(recordFile, 'utf8').catch(() => '');
    return text
      .split('\n')
      .filter((line) => line !== '')
      .map((line) => JSON.parse(line) as RecordedRequest);
  };
  return {
    dir,
    pid: ready.pid,
    root,
    proxyUrl,
    proxyEnvironment() {
      if (!proxyUrl) throw new Error('this world has no proxy: create it with proxy: true');
      return {
        http_proxy: proxyUrl,
        https_proxy: proxyUrl,
        HTTP_PROXY: proxyUrl,
        HTTPS_PROXY: proxyUrl,
      };
    },
    wrap,
    wrapOutside,
    run(handler, operation, options) {
      return handler.run(operation, {
        ...options,
        launcher: (argv, cwd) => wrap(options.launcher ? options.launcher(argv, cwd) : argv, cwd),
      });
    },
    async exec(argv, options = {}) {
      const [file, ...args] = wrap(argv, '/');
      return runTool(file ?? 'nsenter', args, {
        env: options.env ?? { PATH: AGENT_PATH, LANG: 'C' },
        ...(options.input === undefined ? {} : { input: options.input }),
        ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
      });
    },
    async imdsRequests(pathname) {
      return (await records()).filter(
        (record) =>
          record.server === 'imds' &&
          (pathname === undefined || new URL(record.url, 'http://imds').pathname === pathname),
      );
    },
    async proxyRequests() {
      return (await records()).filter((record) => record.server === 'proxy');
    },
    async close() {
      await stopKeeper(keeper, ready.pid);
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Ends the world: first every process still inside it (anything a test or the handler started
 * there and left running, e.g. a gpg-agent or a lock holder: it would keep the namespaces, their
 * mounts and the root's files in use), then the keeper.
 */
async function stopKeeper(keeper: ChildProcessWithoutNullStreams, pid?: number): Promise<void> {
  // Only while the keeper is alive is `pid` its pid (and not a reused one).
  if (pid !== undefined && keeper.exitCode === null && keeper.signalCode === null) {
    await killProcessesInside(pid);
  }
  await stopChild(keeper);
}

/**
 * SIGKILLs, by pid, every process other than the keeper whose mount namespace is the keeper's:
 * exactly the processes started in this world (`nsenter` puts them there) and their children.
 * Again until none is left, for those that forked meanwhile.
 */
async function killProcessesInside(keeperPid: number): Promise<void> {
  const namespace = await fs.readlink(`/proc/${keeperPid}/ns/mnt`).catch(() => undefined);
  // Never the machine's own namespace (this process's), whatever happened to the keeper.
  if (namespace === undefined || namespace === (await fs.readlink('/proc/self/ns/mnt'))) return;
  for (let round = 0; round < 100; round++) {
    const inside: number[] = [];
    for (const entry of await fs.readdir('/proc')) {
      if (!/^\d+$/.test(entry) || Number(entry) === keeperPid) continue;
      // A process that has exited (or is exiting) has no namespace any more: readlink fails.
      const link = await fs.readlink(`/proc/${entry}/ns/mnt`).catch(() => undefined);
      if (link === namespace) inside.push(Number(entry));
    }
    if (inside.length === 0) return;
    for (const pid of inside) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    // A killed process leaves its namespaces when the kernel has finished it: look again shortly.
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`processes inside the world (keeper ${keeperPid}) survive SIGKILL`);
}

/** Waits for the keeper's ready line; fails with its stderr when it exits first. */
function keeperReady(
  keeper: ChildProcessWithoutNullStreams,
): Promise<{ pid: number; proxyPort: number | null }> {
  return new Promise((resolve, reject) => {
    let stderr = '';
    keeper.stderr.setEncoding('utf8');
    keeper.stderr.on('data', (chunk: string) => {
      stderr += chunk;
    });
    const timer = setTimeout(() => {
      reject(new Error(`the world's keeper did not get ready in 30 s: ${stderr}`));
    }, 30_000);
    const lines = createInterface({ input: keeper.stdout });
    lines.on('line', (line) => {
      const message = JSON.parse(line) as {
        ready?: boolean;
        pid: number;
        proxyPort: number | null;
      };
      if (message.ready) {
        clearTimeout(timer);
        resolve({ pid: message.pid, proxyPort: message.proxyPort });
      }
    });
    keeper.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    keeper.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(
        new Error(`the world's keeper exited (${code ?? signal}) before it was ready: ${stderr}`),
      );
    });
  });
}

// ---------------------------------------------------------------------------------------------
// The set-up plan: which mounts make the requested world
// ---------------------------------------------------------------------------------------------

type Change = { kind: 'file'; content: string } | { kind: 'absent' } | { kind: 'dir' };

/**
 * The commands that turn the new namespaces into the world: loopback with the IMDS address, then
 * one overlay (on a tmpfs upper layer) per directory whose entries are created, replaced by
 * another type, or made absent (a whiteout), then, with a root, its proc, /dev and binds, then
 * bind mounts of fixture files over existing regular files (always for /proc and /sys, which
 * cannot be overlaid). With a root, every path is the root's (see {@link resolveInRoot}).
 */
async function setupCommands(dir: string, options: WorldOptions): Promise<string[][]> {
  const root = options.root === undefined ? undefined : path.resolve(options.root);
  const binds = (options.binds ?? []).map((bind) => {
    if (!path.isAbsolute(bind)) throw new Error(`world binds are absolute: ${bind}`);
    if (root === undefined) throw new Error('binds need a root');
    return path.resolve(bind);
  });
  const changes = new Map<string, Change>();
  const set = (target: string, change: Change) => {
    if (!path.isAbsolute(target)) throw new Error(`world paths are absolute: ${target}`);
    const normal = path.normalize(target);
    const under = binds.find((bind) => normal === bind || normal.startsWith(`${bind}/`));
    if (under) throw new Error(`${target} is below the bound folder ${under}: change it there`);
    changes.set(normal, change);
  };
  const content = (value: string | null): Change =>
    value === null ? { kind: 'absent' } : { kind: 'file', content: value };
  if (options.osRelease !== undefined) set('/etc/os-release', content(options.osRelease));
  const usrLib =
    options.usrLibOsRelease !== undefined
      ? options.usrLibOsRelease
      : typeof options.osRelease === 'string'
        ? options.osRelease
        : undefined;
  if (usrLib !== undefined) set('/usr/lib/os-release', content(usrLib));
  if (options.meminfo !== undefined) set('/proc/meminfo', content(options.meminfo));
  for (const [target, value] of Object.entries(options.files ?? {})) set(target, content(value));
  for (const target of options.hide ?? []) set(target, { kind: 'absent' });
  for (const target of options.dirs ?? []) set(target, { kind: 'dir' });

  const commands: string[][] = [
    ['ip', 'link', 'set', 'lo', 'up'],
    ['ip', 'addr', 'add', `${IMDS_ADDRESS}/32`, 'dev', 'lo'],
  ];
  const fixtures = path.join(dir, 'fixtures');
  await fs.mkdir(fixtures);
  let fixtureCount = 0;
  const fixture = async (text: string) => {
    const file = path.join(fixtures, String(fixtureCount++));
    await fs.writeFile(file, text, { mode: 0o644 });
    return file;
  };

  const fileBinds: string[][] = [];
  const overlays = new Map<string, [string, Change][]>();
  for (const [target, change] of changes) {
    const pseudo = target.startsWith('/proc/') || target.startsWith('/sys/');
    if (pseudo && root !== undefined && !target.startsWith('/proc/')) {
      throw new Error(`${target}: a world with a root mounts /proc only, not /sys`);
    }
    // Pseudo files of a root are those of its fresh proc, the machine's until it is mounted.
    const onMachine =
      root === undefined ? target : pseudo ? target : await resolveInRoot(root, target);
    const mountPoint = root !== undefined && pseudo ? path.join(root, target) : onMachine;
    const stat = await fs.lstat(onMachine).catch(() => undefined);
    if (change.kind === 'file' && (pseudo || stat?.isFile())) {
      if (!stat?.isFile()) throw new Error(`${target} must be an existing file to bind over it`);
      fileBinds.push(['mount', '--bind', await fixture(change.content), mountPoint]);
      continue;
    }
    if (pseudo) throw new Error(`${target}: only existing files in /proc and /sys can be changed`);
    if (change.kind === 'absent' && !stat) continue;
    const base = await nearestExistingDirectory(path.dirname(onMachine));
    if (root !== undefined && base !== root && !base.startsWith(`${root}/`)) {
      throw new Error(`${target} leads out of the root ${root}`);
    }
    overlays.set(base, [...(overlays.get(base) ?? []), [onMachine, change]]);
  }
  if (overlays.size > 0) {
    const layers = path.join(dir, 'layers');
    await fs.mkdir(layers);
    commands.push(['mount', '-t', 'tmpfs', '-o', 'mode=0755', 'aad-world', layers]);
    // Shallow directories first, so a deeper overlay stacks on the one above it.
    const bases = [...overlays.keys()].sort((a, b) => a.length - b.length);
    for (const [index, base] of bases.entries()) {
      const upper = path.join(layers, String(index), 'upper');
      const work = path.join(layers, String(index), 'work');
      commands.push(['mkdir', '-p', upper, work]);
      for (const [target, change] of overlays.get(base) ?? []) {
        const inUpper = path.join(upper, path.relative(base, target));
        if (change.kind === 'dir') {
          commands.push(['mkdir', '-p', inUpper]);
          continue;
        }
        commands.push(['mkdir', '-p', path.dirname(inUpper)]);
        if (change.kind === 'absent') {
          commands.push(['mknod', inUpper, 'c', '0', '0']);
        } else {
          commands.push(['cp', await fixture(change.content), inUpper]);
          commands.push(['chmod', '0644', inUpper]);
        }
      }
      commands.push([
        'mount',
        '-t',
        'overlay',
        '-o',
        `lowerdir=${base},upperdir=${upper},workdir=${work}`,
        'aad-world',
        base,
      ]);
    }
  }
  // After the overlays (an overlay on a folder would hide what is mounted below it), before the
  // file binds (/proc/meminfo is bound over the fresh proc's).
  if (root !== undefined) commands.push(...(await rootMounts(root, binds)));
  return [...commands, ...fileBinds];
}

/**
 * What a VM has that a copied root folder lacks: its own proc (of the machine's pid namespace:
 * the handler must see other processes' locks and names, as on a VM), the devices (/dev of the
 * machine, with a /dev/shm of its own so nothing written there reaches the machine's), and the
 * bound folders at their own paths.
 */
async function rootMounts(root: string, binds: readonly string[]): Promise<string[][]> {
  const commands: string[][] = [
    ['mkdir', '-p', path.join(root, 'proc'), path.join(root, 'dev')],
    ['mount', '-t', 'proc', 'aad-world-proc', path.join(root, 'proc')],
    ['mount', '--rbind', '/dev', path.join(root, 'dev')],
    ['mkdir', '-p', path.join(root, 'dev', 'shm')],
    [
      'mount',
      '-t',
      'tmpfs',
      '-o',
      'mode=1777,nosuid,nodev',
      'aad-world-shm',
      path.join(root, 'dev', 'shm'),
    ],
  ];
  for (const bind of binds) {
    const target = await resolveInRoot(root, bind);
    commands.push(['mkdir', '-p', target], ['mount', '--rbind', bind, target]);
  }
  return commands;
}

/**
 * The machine's path of `file` inside `root`, resolved as the kernel does for a process chrooted
 * there: symbolic links on the way are followed inside the root (an absolute one starts again
 * at the root, `..` stops at it), the last component is not followed.
 */
export async function resolveInRoot(root: string, file: string): Promise<string> {
  if (!path.isAbsolute(file)) throw new Error(`paths in a root are absolute: ${file}`);
  const parts = file.split('/').filter((part) => part !== '' && part !== '.');
  const last = parts.pop();
  if (last === undefined) return root;
  const pending = [...parts];
  let resolved: string[] = [];
  let links = 0;
  for (let part = pending.shift(); part !== undefined; part = pending.shift()) {
    if (part === '.') continue;
    if (part === '..') {
      resolved.pop();
      continue;
    }
    const onMachine = path.join(root, ...resolved, part);
    const stat = await fs.lstat(onMachine).catch(() => undefined);
    if (!stat?.isSymbolicLink()) {
      resolved.push(part);
      continue;
    }
    if (++links > 40) throw new Error(`too many symbolic links in ${file} inside ${root}`);
    const link = await fs.readlink(onMachine);
    if (link.startsWith('/')) resolved = [];
    pending.unshift(...link.split('/').filter((p) => p !== ''));
  }
  return last === '..'
    ? path.join(root, ...resolved.slice(0, -1))
    : path.join(root, ...resolved, last);
}

async function nearestExistingDirectory(directory: string): Promise<string> {
  for (let current = directory; ; current = path.dirname(current)) {
    const stat = await fs.stat(current).catch(() => undefined);
    if (stat?.isDirectory()) return current;
    if (current === '/') throw new Error(`no existing directory above ${directory}`);
  }
}

/**
 * This machine's dpkg database (/var/lib/dpkg/status) with one more package recorded as
 * installed, for a world in which `dpkg-query -W <name>` finds it.
 */
export async function dpkgStatusWith(name: string, version: string): Promise<string> {
  const status = await fs.readFile('/var/lib/dpkg/status', 'utf8');
  const stanza = [
    `Package: ${name}`,
    'Status: install ok installed',
    'Priority: optional',
    'Section: admin',
    'Installed-Size: 2048',
    'Maintainer: Microsoft Corporation <aadlogin@microsoft.com>',
    'Architecture: amd64',
    `Version: ${version}`,
    'Description: Azure Active Directory login for Linux (test stand-in)',
  ].join('\n');
  return `${status.replace(/\n*$/, '\n\n')}${stanza}\n`;
}

/**
 * An ordinary Azure VM for tests that are not about the checks: this machine's own files, and an
 * IMDS that knows the VM's system-assigned identity. Pass `world.launcher` to
 * `AgentSandbox.create` so that every command of the sandbox runs in it.
 */
export async function azureVm(): Promise<World & { launcher: Launcher }> {
  const world = await createWorld({ imds: { [TOKEN_PATH]: [imdsToken('azure-vm')] } });
  return Object.assign(world, {
    launcher: (argv: readonly string[], cwd: string) => world.wrap(argv, cwd),
  });
}
