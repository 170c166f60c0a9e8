/**
 * Drives a built handler zip the way the Linux guest agent (WALinuxAgent) does, without the agent
 * process: unzip with Python's zipfile, `initialize()` (u+x on every file, config/ and status/,
 * HandlerEnvironment.json), `config/<seq>.settings`, and every command started as
 * `/bin/sh -c "<dir>/<command>"` from the unzipped HandlerManifest.json with the agent's
 * environment variables, timeouts and process group. Status files are judged by the agent's own
 * Python code (Debian's waagent 2.7.3.0, see agent_status.py). The references are
 * /work/shared/reference/agent-protocol.md §1–§6 and the agent's ga/exthandlers.py.
 *
 * Nothing here changes `process.env` or the working directory: every child gets an explicit
 * environment and cwd, and everything lives in a temporary folder per sandbox.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, promises as fs, openSync, readFileSync, readSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { toExtensionVersion } from '../../src/version.js';

const execFileAsync = promisify(execFile);

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const PUBLISHER = 'Microsoft.Azure.ActiveDirectory';
export const LINUX_HANDLER_NAME = `${PUBLISHER}.AADSSHLoginForLinux`;
export const WINDOWS_HANDLER_NAME = `${PUBLISHER}.AADLoginForWindows`;
export const LINUX_LOG_FILE = 'aadsshlogin-handler.log';

/** Debian's /usr/bin/python3: the interpreter the Debian agent runs under. */
export const PYTHON = '/usr/bin/python3';
/** The WireServer address the agent passes (`protocol.get_endpoint()`). */
export const WIRE_PROTOCOL_ADDRESS = '168.63.129.16';
/** `AZURE_GUEST_AGENT_EXTENSION_SUPPORTED_FEATURES`, as json.dumps writes it (both agent versions). */
export const SUPPORTED_FEATURES = '[{"Key": "ExtensionTelemetryPipeline", "Value": "1.0"}]';
/** The agent's PATH under systemd, the only variable of its own environment the driver passes. */
export const AGENT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** What the agent validates a status file against (§4.3). */
export const MAX_STATUS_FILE_BYTES = 128 * 1024;
export const MAX_STATUS_MESSAGE_CHARS = 1024;

export type Operation = 'install' | 'enable' | 'disable' | 'uninstall' | 'update';
export const OPERATIONS: readonly Operation[] = [
  'install',
  'enable',
  'disable',
  'uninstall',
  'update',
];

/** The agent's timeout per command (§1.2): it kills the process group when it expires. */
export const AGENT_TIMEOUT_SECONDS: Readonly<Record<Operation, number>> = {
  install: 900,
  enable: 300,
  disable: 900,
  update: 900,
  uninstall: 300,
};

// ---------------------------------------------------------------------------------------------
// The built zips
// ---------------------------------------------------------------------------------------------

/** The npm version of a checkout (package.json `version`). */
export function npmVersionOf(root: string = REPO_ROOT): string {
  const packageJson = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as {
    version: string;
  };
  return packageJson.version;
}

/** The four-part extension version of a checkout, derived as the package script does. */
export function extensionVersionOf(root: string = REPO_ROOT): string {
  return toExtensionVersion(npmVersionOf(root));
}

export function zipPathOf(
  handlerName: string,
  root: string = REPO_ROOT,
  version = extensionVersionOf(root),
): string {
  return path.join(root, 'dist', `${handlerName}-${version}.zip`);
}

/** The path of a built zip, or an error that says how to build it. */
export async function requireZip(handlerName: string, root: string = REPO_ROOT): Promise<string> {
  const zip = zipPathOf(handlerName, root);
  const exists = await fs.stat(zip).then(
    (stat) => stat.isFile(),
    () => false,
  );
  if (!exists) {
    throw new Error(
      `${zip} does not exist. The package tests run the built zip: run \`npm run package\` first (scripts/test.sh does).`,
    );
  }
  return zip;
}

/** The entries of a zip, listed by Python's zipfile (the agent's unzipper). */
export async function zipEntries(zip: string): Promise<string[]> {
  const { stdout } = await execFileAsync(
    PYTHON,
    ['-c', 'import sys, zipfile; print("\\n".join(zipfile.ZipFile(sys.argv[1]).namelist()))', zip],
    { env: { PATH: AGENT_PATH } },
  );
  return stdout.split('\n').filter((line) => line !== '');
}

/**
 * Builds the zips of a copy of this checkout whose package.json version is `npmVersion` (for the
 * update scenario): the checkout is copied without dist/, node_modules/ and .git/ into a temporary
 * folder, node_modules is linked, and `npm run package` runs there. Returns the copy's root; the
 * caller removes it.
 */
export async function buildCopyWithVersion(npmVersion: string): Promise<string> {
  const copy = await fs.mkdtemp(path.join(os.tmpdir(), 'aad-handler-build-'));
  const skip = new Set(['node_modules', 'dist', '.git', '.cache']);
  for (const entry of await fs.readdir(REPO_ROOT)) {
    if (skip.has(entry)) continue;
    await fs.cp(path.join(REPO_ROOT, entry), path.join(copy, entry), {
      recursive: true,
      filter: (source) => !source.split(path.sep).includes('node_modules'),
    });
  }
  await fs.symlink(path.join(REPO_ROOT, 'node_modules'), path.join(copy, 'node_modules'));
  const packageFile = path.join(copy, 'package.json');
  const packageJson = JSON.parse(await fs.readFile(packageFile, 'utf8')) as Record<string, unknown>;
  packageJson.version = npmVersion;
  await fs.writeFile(packageFile, `${JSON.stringify(packageJson, null, 2)}\n`);
  try {
    await execFileAsync('npm', ['run', 'package'], {
      cwd: copy,
      env: { ...process.env },
      maxBuffer: 16 * 1024 * 1024,
    });
  } catch (error) {
    const failure = error as { stdout?: string; stderr?: string; message: string };
    throw new Error(
      `npm run package failed in a copy with version ${npmVersion}: ${failure.message}\n${failure.stdout ?? ''}${failure.stderr ?? ''}`,
    );
  }
  return copy;
}

/** A newer version of the Linux handler built from this checkout (see {@link buildNextVersion}). */
export interface NextBuild {
  version: string;
  zip: string;
  /** The copy it was built in; the caller removes it. */
  copy: string;
}

/** The Linux handler of this checkout built again with the next revision, for update scenarios. */
export async function buildNextVersion(): Promise<NextBuild> {
  const copy = await buildCopyWithVersion(nextRevision(npmVersionOf()));
  return { copy, version: extensionVersionOf(copy), zip: zipPathOf(LINUX_HANDLER_NAME, copy) };
}

/** The next build revision of an npm version: 1.0.0 -> 1.0.0+1, 1.0.0+4 -> 1.0.0+5. */
export function nextRevision(npmVersion: string): string {
  const [base, revision] = npmVersion.split('+');
  return `${base}+${Number(revision ?? '0') + 1}`;
}

// ---------------------------------------------------------------------------------------------
// The real agent's code (Debian waagent 2.7.3.0), for judging status files
// ---------------------------------------------------------------------------------------------

export const WAAGENT_VERSION = '2.7.3.0';

/** A cache outside the repository: /var/cache for root, else $XDG_CACHE_HOME or ~/.cache. */
export function testCacheDir(): string {
  if (process.getuid?.() === 0) return '/var/cache/aad-handler-tests';
  const xdg = process.env.XDG_CACHE_HOME;
  return path.join(
    xdg && path.isAbsolute(xdg) ? xdg : path.join(os.homedir(), '.cache'),
    'aad-handler-tests',
  );
}

let waagentPromise: Promise<string> | undefined;

/**
 * The agent's `dist-packages` folder from Debian's `waagent` package, downloaded with
 * `apt-get download` and unpacked with `dpkg-deb -x` into the test cache on first use (never
 * installed, so no service starts). Idempotent and safe when two test processes race: each
 * unpacks into its own folder and renames it into place.
 */
export function ensureWaagent(): Promise<string> {
  waagentPromise ??= unpackWaagent();
  return waagentPromise;
}

async function unpackWaagent(): Promise<string> {
  const cache = path.join(testCacheDir(), `waagent-${WAAGENT_VERSION}`);
  const distPackages = path.join(cache, 'usr', 'lib', 'python3', 'dist-packages');
  const versionFile = path.join(distPackages, 'azurelinuxagent', 'common', 'version.py');
  const check = async () => {
    const text = await fs.readFile(versionFile, 'utf8').catch(() => undefined);
    if (text === undefined) return false;
    if (!text.includes(`AGENT_VERSION = '${WAAGENT_VERSION}'`)) {
      throw new Error(
        `${versionFile} is not WALinuxAgent ${WAAGENT_VERSION}; remove ${cache} and run again.`,
      );
    }
    return true;
  };
  if (await check()) return distPackages;
  await fs.mkdir(path.dirname(cache), { recursive: true });
  const work = await fs.mkdtemp(`${cache}.partial-`);
  try {
    try {
      await execFileAsync('apt-get', ['download', 'waagent'], {
        cwd: work,
        env: { PATH: AGENT_PATH, LANG: 'C' },
      });
    } catch (error) {
      throw new Error(
        `Cannot get the real guest agent's code: \`apt-get download waagent\` failed (${(error as Error).message.trim()}). The package tests judge status files with Debian's waagent ${WAAGENT_VERSION}; run them on Debian 12 with its package repositories reachable.`,
      );
    }
    const debs = (await fs.readdir(work)).filter((name) => /^waagent_.*\.deb$/.test(name));
    const deb = debs[0];
    if (!deb) throw new Error(`apt-get download waagent left no .deb in ${work}`);
    await execFileAsync('dpkg-deb', ['-x', path.join(work, deb), path.join(work, 'root')], {
      env: { PATH: AGENT_PATH },
    });
    await fs.rename(path.join(work, 'root'), cache).catch(async (error: NodeJS.ErrnoException) => {
      // Another test process won the race; its copy is as good as ours.
      if (error.code !== 'ENOTEMPTY' && error.code !== 'EEXIST') throw error;
    });
  } finally {
    await fs.rm(work, { recursive: true, force: true });
  }
  if (!(await check())) throw new Error(`${versionFile} is missing after unpacking waagent`);
  return distPackages;
}

const AGENT_SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'agent_status.py');

async function runAgentScript(args: readonly string[]): Promise<unknown> {
  const agentRoot = await ensureWaagent();
  let stdout: string;
  try {
    ({ stdout } = await execFileAsync(PYTHON, [AGENT_SCRIPT, '--agent-root', agentRoot, ...args], {
      env: { PATH: AGENT_PATH, LANG: 'C.UTF-8' },
      maxBuffer: 16 * 1024 * 1024,
      timeout: 120_000,
    }));
  } catch (error) {
    const failure = error as { stderr?: string; message: string };
    const hint = /No module named '(distro|distutils)/.test(failure.stderr ?? '')
      ? ' Install python3-distro and python3-distutils (scripts/test.sh does).'
      : '';
    throw new Error(`The agent's code failed: ${failure.message}${failure.stderr ?? ''}${hint}`);
  }
  return JSON.parse(stdout);
}

/** What the agent reports for one status file (its `collect_ext_status`). */
export interface AgentStatusVerdict {
  agentVersion: string;
  statusFile: string;
  /** Whether the file passed the agent's reading and `parse_ext_status` without an error. */
  accepted: boolean;
  rejection: string | null;
  sizeChars: number | null;
  reported: {
    status: string;
    code: number;
    message: string | null;
    operation: string | null;
    configurationAppliedTime: string | null;
    sequenceNumber: number;
    substatus: { name: string | null; status: string; code: number; message: string | null }[];
  } | null;
}

/** The agent's own answers for a handler directory: what it would write and run (agent_status.py). */
export interface AgentReference {
  agentVersion: string;
  baseDir: string;
  handlerEnvironment: string;
  settings: string;
  noSettings: string;
  commands: {
    name: string;
    command: string;
    cwd: string;
    shell: boolean;
    timeout: number;
    env: Record<string, string>;
  }[];
}

/** The agent's collector on the events folder, file by file (agent_status.py `events`). */
export interface AgentEventsVerdict {
  agentVersion: string;
  folder: string;
  files: {
    file: string;
    /** Whether the collector reads the file at all (its name and size). */
    collected: boolean;
    /** How many events the file holds, when collected. */
    events: number | null;
    /** The events the agent would send: the parameters it takes from each. */
    sent: {
      EventName: string;
      CapabilityUsed: string;
      TaskName: string;
      /** The message. */
      Context1: string;
      /** The event's timestamp. */
      Context2: string;
      /** The operation id. */
      Context3: string;
      EventPid: string;
      EventTid: string;
    }[];
    /** Events dropped, by the agent's reason. */
    dropped: Record<string, number>;
  }[];
}

export interface AgentManifest {
  agentVersion: string;
  commands: Record<Operation, string>;
  reportHeartbeat: boolean;
  updateWithInstall: boolean;
  continueOnUpdateFailure: boolean;
  supportsMultipleExtensions: boolean;
}

// ---------------------------------------------------------------------------------------------
// Python's json.dumps, default formatting (the agent writes its files with it)
// ---------------------------------------------------------------------------------------------

/** A number the agent writes as a Python float (1.0), where JavaScript would write 1. */
export class PythonFloat {
  constructor(readonly value: number) {}
}

/** `json.dumps(value)` with Python's defaults: ", " and ": " separators, ASCII only. */
export function pythonJsonDumps(value: unknown): string {
  if (value === null || value === undefined) return 'null';
  if (value instanceof PythonFloat) {
    return Number.isInteger(value.value) ? value.value.toFixed(1) : String(value.value);
  }
  if (typeof value === 'string') {
    return JSON.stringify(value).replace(
      /[\u0080-\uffff]/g,
      (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`,
    );
  }
  if (typeof value === 'number' || typeof value === 'boolean') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(pythonJsonDumps).join(', ')}]`;
  const entries = Object.entries(value as Record<string, unknown>);
  return `{${entries.map(([key, item]) => `${pythonJsonDumps(key)}: ${pythonJsonDumps(item)}`).join(', ')}}`;
}

// ---------------------------------------------------------------------------------------------
// A sandbox: the agent's Lib.Dir and Extension.LogDir in a temporary folder
// ---------------------------------------------------------------------------------------------

export class AgentSandbox {
  /** The agent's `Lib.Dir` (default /var/lib/waagent). */
  readonly libDir: string;
  /** The agent's `Extension.LogDir` (default /var/log/azure). */
  readonly extensionLogDir: string;

  private constructor(
    readonly root: string,
    /** Wraps every command this sandbox's handlers run (a test world's namespaces), unless a run says otherwise. */
    readonly launcher: Launcher | undefined,
  ) {
    this.libDir = path.join(root, 'lib');
    this.extensionLogDir = path.join(root, 'log', 'azure');
  }

  static async create(label: string, options: { launcher?: Launcher } = {}): Promise<AgentSandbox> {
    const root = await fs.mkdtemp(path.join(os.tmpdir(), `aad-agent-${label}-`));
    const sandbox = new AgentSandbox(root, options.launcher);
    await fs.mkdir(sandbox.libDir, { recursive: true, mode: 0o755 });
    await fs.mkdir(sandbox.extensionLogDir, { recursive: true, mode: 0o755 });
    return sandbox;
  }

  /** `<Extension.LogDir>/<handler name>`: shared by every version, kept after uninstall. */
  logFolder(handlerName = LINUX_HANDLER_NAME): string {
    return path.join(this.extensionLogDir, handlerName);
  }

  handlerDir(version: string, handlerName = LINUX_HANDLER_NAME): string {
    return path.join(this.libDir, `${handlerName}-${version}`);
  }

  /** The handler's own folder for its lock and state, beside the versioned handler folders. */
  stateFolder(handlerName = LINUX_HANDLER_NAME): string {
    return path.join(this.libDir, `${handlerName}.state`);
  }

  async readState(handlerName = LINUX_HANDLER_NAME): Promise<HandlerStateFile | undefined> {
    const text = await fs
      .readFile(path.join(this.stateFolder(handlerName), 'state.json'), 'utf8')
      .catch(() => undefined);
    return text === undefined ? undefined : (JSON.parse(text) as HandlerStateFile);
  }

  /** The handler's log lines (`<logFolder>/aadsshlogin-handler.log`), parsed. */
  async readLog(handlerName = LINUX_HANDLER_NAME): Promise<LogLine[]> {
    const text = await fs
      .readFile(path.join(this.logFolder(handlerName), LINUX_LOG_FILE), 'utf8')
      .catch(() => '');
    return text
      .split('\n')
      .filter((line) => line !== '')
      .map(parseLogLine);
  }

  /**
   * Unzips a handler the way the agent does (§6.1 steps 2–3): Python's zipfile into
   * `<Lib.Dir>/<name>-<version>` (mode bits are lost), then `initialize()`.
   */
  async unpack(
    zip: string,
    version: string,
    handlerName = LINUX_HANDLER_NAME,
  ): Promise<HandlerInstance> {
    const dir = this.handlerDir(version, handlerName);
    await execFileAsync(PYTHON, ['-m', 'zipfile', '-e', zip, dir], { env: { PATH: AGENT_PATH } });
    const handler = new HandlerInstance(this, handlerName, version, dir);
    await handler.initialize();
    return handler;
  }

  async cleanup(): Promise<void> {
    await fs.rm(this.root, { recursive: true, force: true });
  }
}

export interface HandlerStateFile {
  schemaVersion: number;
  owner: string | null;
  installed: Record<string, unknown>;
  applied: { sequenceNumber: number; operation: string; version: string; status: string }[];
  journal: unknown[];
}

export interface LogLine {
  raw: string;
  /** Parsed when the line has the handler's format; `fromScript` marks the entry script's lines. */
  timestamp?: string;
  level?: string;
  operation?: string;
  sequenceNumber?: string;
  version?: string;
  pid?: number;
  fromScript?: boolean;
  message?: string;
}

const EXECUTABLE_LINE =
  /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z) (\w+)\s+\[(\w+) seq=(\S+) v=(\S+) pid=(\d+)\] (.*)$/;
const SCRIPT_PREFIX = 'handler/aadsshlogin-handler.sh: ';

export function parseLogLine(raw: string): LogLine {
  const executable = EXECUTABLE_LINE.exec(raw);
  if (executable) {
    return {
      raw,
      timestamp: executable[1],
      level: executable[2],
      operation: executable[3],
      sequenceNumber: executable[4],
      version: executable[5],
      pid: Number(executable[6]),
      message: executable[7],
      ...(executable[7]?.startsWith(SCRIPT_PREFIX) ? { fromScript: true } : {}),
    };
  }
  return { raw };
}

// ---------------------------------------------------------------------------------------------
// One unpacked handler version
// ---------------------------------------------------------------------------------------------

export interface HandlerSettingsInput {
  publicSettings?: Record<string, unknown> | null;
  protectedSettings?: string | null;
  protectedSettingsCertThumbprint?: string | null;
}

export interface RunOptions {
  /**
   * `ConfigSequenceNumber`: the goal state's sequence number, or `null` for a handler without
   * settings (the agent then passes "0").
   */
  seq: number | null;
  /** install, enable: the old version's uninstall exit code during an update (else "NOT_RUN"). */
  uninstallExitCode?: number;
  /** update: the version updated from (`AZURE_GUEST_AGENT_UPDATING_FROM_VERSION`). */
  updatingFromVersion?: string;
  /** update: the new version (`VERSION`); this handler's version when not given. */
  updatingToVersion?: string;
  /** update: the old disable's exit code, or `null` when it did not run (the agent then passes "None"). */
  disableExitCode?: number | null;
  /** The agent process's own environment, passed on after (and over) its variables. */
  agentEnvironment?: Record<string, string>;
  /**
   * Arguments after the manifest's command line, as an operator adds them (`--dry-run`): such a
   * run is not the agent's, so the agent's HandlerState is left as it is.
   */
  extraArguments?: readonly string[];
  timeoutMs?: number;
  /** Wraps the argv the agent would start (`/bin/sh -c <command>`), e.g. in `unshare`. */
  launcher?: Launcher;
  /**
   * Called with the pid of the started process once it runs. It leads the command's own process
   * group (the agent starts each command in a new session), so `process.kill(-pid, 'SIGKILL')`
   * is the agent's `os.killpg(pgid, SIGKILL)`: the handler and every child it started die.
   */
  onStart?: (pid: number) => void;
}

/** Wraps the argv of a command started with working directory `cwd`. */
export type Launcher = (argv: readonly string[], cwd: string) => readonly string[];

export interface CommandRun {
  operation: Operation;
  command: string;
  env: Record<string, string>;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  stdout: string;
  stderr: string;
  durationMs: number;
  /** When the command was started (ms since the epoch), to tell commands started together. */
  startedAt: number;
}

export class HandlerInstance {
  readonly configFolder: string;
  readonly statusFolder: string;
  readonly heartbeatFile: string;
  readonly logFolder: string;
  readonly eventsFolder: string;

  constructor(
    readonly sandbox: AgentSandbox,
    readonly handlerName: string,
    readonly version: string,
    readonly dir: string,
  ) {
    this.configFolder = path.join(dir, 'config');
    this.statusFolder = path.join(dir, 'status');
    this.heartbeatFile = path.join(dir, 'heartbeat.log');
    this.logFolder = sandbox.logFolder(handlerName);
    this.eventsFolder = path.join(this.logFolder, 'events');
  }

  /**
   * The agent's `initialize()` and what precedes it: the log folder (0755, made when the agent
   * sets up the handler's CommandExecution.log), u+x on every file, the manifest rewritten
   * without a BOM, config/ and status/ (0700), events/ (0700), HandlerEnvironment.json, and
   * HandlerState `NotInstalled`.
   */
  async initialize(): Promise<void> {
    await fs.mkdir(this.logFolder, { recursive: true, mode: 0o755 });
    for (const file of await listFiles(this.dir)) {
      const stat = await fs.stat(file);
      await fs.chmod(file, stat.mode | 0o100);
    }
    const manifest = path.join(this.dir, 'HandlerManifest.json');
    const text = await fs.readFile(manifest, 'utf8');
    await fs.writeFile(manifest, text.replace(/^\uFEFF/, ''));
    await fs.mkdir(this.statusFolder, { recursive: true, mode: 0o700 });
    await fs.mkdir(this.configFolder, { recursive: true, mode: 0o700 });
    await fs.mkdir(this.eventsFolder, { recursive: true, mode: 0o700 });
    await fs.writeFile(path.join(this.dir, 'HandlerEnvironment.json'), this.handlerEnvironment());
    await this.setHandlerState('NotInstalled');
  }

  /** HandlerEnvironment.json exactly as `create_handler_env` writes it (§2.1): one line. */
  handlerEnvironment(): string {
    return pythonJsonDumps([
      {
        name: this.handlerName,
        version: new PythonFloat(1.0),
        handlerEnvironment: {
          logFolder: this.logFolder,
          configFolder: this.configFolder,
          statusFolder: this.statusFolder,
          heartbeatFile: this.heartbeatFile,
          eventsFolder: this.eventsFolder,
          eventsFolder_preview: this.eventsFolder,
        },
      },
    ]);
  }

  /** `config/<seq>.settings` as `update_settings` writes it (§3.1); absent values are `null`. */
  async writeSettings(seq: number, settings: HandlerSettingsInput = {}): Promise<string> {
    const file = path.join(this.configFolder, `${seq}.settings`);
    await fs.writeFile(file, settingsFileText(settings));
    return file;
  }

  /** The legacy "no settings" case: an empty (0-byte) `0.settings`. */
  async writeNoSettings(): Promise<string> {
    const file = path.join(this.configFolder, '0.settings');
    await fs.writeFile(file, '');
    return file;
  }

  /** config/HandlerState, which belongs to the agent (§2.2). */
  async setHandlerState(
    state: 'NotInstalled' | 'Installed' | 'Enabled' | 'FailedUpgrade',
  ): Promise<void> {
    await fs.writeFile(path.join(this.configFolder, 'HandlerState'), state);
  }

  /** The manifest's command line for an operation, from the unzipped HandlerManifest.json. */
  async manifestCommand(operation: Operation): Promise<string> {
    const text = (await fs.readFile(path.join(this.dir, 'HandlerManifest.json'), 'utf8')).replace(
      /^\uFEFF/,
      '',
    );
    const manifest = JSON.parse(text) as [{ handlerManifest: Record<string, unknown> }];
    const command = manifest[0].handlerManifest[`${operation}Command`];
    if (typeof command !== 'string') {
      throw new Error(
        `HandlerManifest.json has no ${operation}Command (the agent raises KeyError)`,
      );
    }
    return command;
  }

  /** The command line and environment the agent starts for an operation (§1.2, §5). */
  async plan(
    operation: Operation,
    options: RunOptions,
  ): Promise<{ command: string; env: Record<string, string> }> {
    const relative = await this.manifestCommand(operation);
    // os.path.join(base_dir, cmd.lstrip('/')): plain concatenation, nothing normalised.
    const stripped = relative.replace(/^\/+/, '');
    const command = this.dir.endsWith('/') ? `${this.dir}${stripped}` : `${this.dir}/${stripped}`;
    const agentVariables: Record<string, string> = {};
    if (operation === 'install' || operation === 'enable') {
      agentVariables.AZURE_GUEST_AGENT_UNINSTALL_CMD_EXIT_CODE =
        options.uninstallExitCode === undefined ? 'NOT_RUN' : String(options.uninstallExitCode);
    }
    if (operation === 'update') {
      if (options.updatingFromVersion === undefined) {
        throw new Error('update needs updatingFromVersion');
      }
      agentVariables.VERSION = options.updatingToVersion ?? this.version;
      agentVariables.AZURE_GUEST_AGENT_UPDATING_FROM_VERSION = options.updatingFromVersion;
      agentVariables.AZURE_GUEST_AGENT_DISABLE_CMD_EXIT_CODE =
        options.disableExitCode === null || options.disableExitCode === undefined
          ? 'None'
          : String(options.disableExitCode);
    }
    Object.assign(agentVariables, {
      AZURE_GUEST_AGENT_EXTENSION_PATH: this.dir,
      AZURE_GUEST_AGENT_EXTENSION_VERSION: this.version,
      AZURE_GUEST_AGENT_WIRE_PROTOCOL_ADDRESS: WIRE_PROTOCOL_ADDRESS,
      ConfigSequenceNumber: options.seq === null ? '0' : String(options.seq),
      AZURE_GUEST_AGENT_EXTENSION_SUPPORTED_FEATURES: SUPPORTED_FEATURES,
    });
    // env.update(os.environ): the agent's own environment is applied last and wins.
    const env = { ...agentVariables, ...(options.agentEnvironment ?? { PATH: AGENT_PATH }) };
    return { command, env };
  }

  /**
   * Runs one command as `launch_command` does: `/bin/sh -c <dir>/<command>` in a new session,
   * cwd the handler folder, stdin inherited from a service (/dev/null), stdout and stderr into
   * files in the handler folder, the process group killed at the agent's timeout.
   */
  async run(operation: Operation, options: RunOptions): Promise<CommandRun> {
    const planned = await this.plan(operation, options);
    const { env } = planned;
    const command = [planned.command, ...(options.extraArguments ?? [])].join(' ');
    const launcher = options.launcher ?? this.sandbox.launcher;
    const argv = launcher
      ? launcher(['/bin/sh', '-c', command], this.dir)
      : ['/bin/sh', '-c', command];
    const timeoutMs = options.timeoutMs ?? AGENT_TIMEOUT_SECONDS[operation] * 1000;
    const capture = (stream: string) =>
      path.join(this.dir, `.agent-${stream}-${randomBytes(6).toString('hex')}.tmp`);
    const outFile = capture('stdout');
    const errFile = capture('stderr');
    const outFd = openSync(outFile, 'w+', 0o600);
    const errFd = openSync(errFile, 'w+', 0o600);
    const startedAt = Date.now();
    const started = performance.now();
    let child: ChildProcess;
    let exited: Promise<{ exitCode: number | null; signal: NodeJS.Signals | null }>;
    try {
      child = spawn(argv[0] ?? '/bin/sh', argv.slice(1), {
        cwd: this.dir,
        env,
        stdio: ['ignore', outFd, errFd],
        detached: true,
      });
      // Listen before anything else is awaited: a quick command would otherwise exit unheard.
      const started = child;
      exited = new Promise((resolve, reject) => {
        started.once('error', reject);
        started.once('exit', (code, sig) => resolve({ exitCode: code, signal: sig }));
      });
    } finally {
      // The agent's TemporaryFile has no name; the child keeps its descriptors.
      await fs.rm(outFile, { force: true });
      await fs.rm(errFile, { force: true });
    }
    if (child.pid !== undefined) options.onStart?.(child.pid);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      if (child.pid) {
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }, timeoutMs);
    const { exitCode, signal } = await exited.finally(() => clearTimeout(timer));
    const durationMs = performance.now() - started;
    const stdout = readDescriptor(outFd);
    const stderr = readDescriptor(errFd);
    closeSync(outFd);
    closeSync(errFd);
    // An operator's run (extra arguments) is not the agent's: it records nothing then.
    if (!options.extraArguments) {
      if (exitCode === 0) {
        if (operation === 'install' || operation === 'disable')
          await this.setHandlerStateIfPresent('Installed');
        if (operation === 'enable') await this.setHandlerStateIfPresent('Enabled');
      } else if (operation === 'update') {
        await this.setHandlerStateIfPresent('FailedUpgrade');
      }
    }
    return {
      operation,
      command,
      env,
      exitCode,
      signal,
      timedOut,
      stdout,
      stderr,
      durationMs,
      startedAt,
    };
  }

  private async setHandlerStateIfPresent(
    state: 'Installed' | 'Enabled' | 'FailedUpgrade',
  ): Promise<void> {
    const exists = await fs.stat(this.configFolder).then(
      () => true,
      () => false,
    );
    if (exists) await this.setHandlerState(state);
  }

  statusFile(seq: number): string {
    return path.join(this.statusFolder, `${seq}.status`);
  }

  async readStatusText(seq: number): Promise<string | undefined> {
    return fs.readFile(this.statusFile(seq), 'utf8').catch(() => undefined);
  }

  /**
   * Judges `status/<seq>.status` with the agent's own code, and checks the limits the agent
   * would otherwise truncate to (file ≤ 128 KiB, message ≤ 1024 characters). Throws with the
   * agent's reason when the agent would not accept the file.
   */
  async agentStatus(seq: number): Promise<ValidStatus> {
    const verdict = await judgeStatus(this, seq);
    const text = await this.readStatusText(seq);
    if (text === undefined) {
      throw new Error(
        `${this.statusFile(seq)} does not exist (agent: ${verdict.reported?.message})`,
      );
    }
    if (!verdict.accepted || !verdict.reported) {
      throw new Error(
        `the agent rejects ${this.statusFile(seq)}: ${verdict.rejection}; it would report ${JSON.stringify(verdict.reported)}. File: ${text.slice(0, 2000)}`,
      );
    }
    const bytes = Buffer.byteLength(text);
    if (bytes > MAX_STATUS_FILE_BYTES) {
      throw new Error(`${this.statusFile(seq)} is ${bytes} bytes, over the agent's 128 KiB`);
    }
    const message = verdict.reported.message ?? '';
    if (message.length > MAX_STATUS_MESSAGE_CHARS) {
      throw new Error(`the status message is ${message.length} characters, over the agent's 1024`);
    }
    return { ...verdict.reported, message, file: this.statusFile(seq), text };
  }

  /**
   * What the agent's extension-telemetry collector makes of every file in the events folder
   * (agent_status.py `events`); the files stay where they are.
   */
  async agentEvents(): Promise<AgentEventsVerdict> {
    return (await runAgentScript([
      'events',
      '--lib-dir',
      this.sandbox.libDir,
      '--log-dir',
      this.sandbox.extensionLogDir,
      '--name',
      this.handlerName,
      '--version',
      this.version,
    ])) as AgentEventsVerdict;
  }

  /** HandlerManifest.json as the agent's `load_manifest` reads it. */
  async agentManifest(): Promise<AgentManifest> {
    return (await runAgentScript([
      'manifest',
      '--lib-dir',
      this.sandbox.libDir,
      '--log-dir',
      this.sandbox.extensionLogDir,
      '--name',
      this.handlerName,
      '--version',
      this.version,
    ])) as AgentManifest;
  }

  /** The agent's reference answers for this handler folder (what it writes and runs). */
  async agentReference(options: {
    seq: number;
    settings: HandlerSettingsInput;
    updatingFromVersion: string;
  }): Promise<AgentReference> {
    const scratch = await fs.mkdtemp(path.join(os.tmpdir(), 'aad-agent-reference-'));
    try {
      const args = [
        'reference',
        '--lib-dir',
        this.sandbox.libDir,
        '--log-dir',
        this.sandbox.extensionLogDir,
        '--name',
        this.handlerName,
        '--version',
        this.version,
        '--seq',
        String(options.seq),
        '--scratch',
        scratch,
        '--updating-from',
        options.updatingFromVersion,
      ];
      if (
        options.settings.publicSettings !== undefined &&
        options.settings.publicSettings !== null
      ) {
        args.push('--public', JSON.stringify(options.settings.publicSettings));
      }
      if (options.settings.protectedSettings) {
        args.push('--protected', options.settings.protectedSettings);
      }
      if (options.settings.protectedSettingsCertThumbprint) {
        args.push('--thumbprint', options.settings.protectedSettingsCertThumbprint);
      }
      return (await runAgentScript(args)) as AgentReference;
    } finally {
      await fs.rm(scratch, { recursive: true, force: true });
    }
  }
}

export interface ValidStatus {
  status: string;
  code: number;
  message: string;
  operation: string | null;
  substatus: { name: string | null; status: string; code: number; message: string | null }[];
  file: string;
  text: string;
}

/** What the agent makes of `status/<seq>.status` of a handler folder, accepted or not. */
export async function judgeStatus(
  handler: HandlerInstance,
  seq: number,
): Promise<AgentStatusVerdict> {
  return (await runAgentScript([
    'status',
    '--lib-dir',
    handler.sandbox.libDir,
    '--log-dir',
    handler.sandbox.extensionLogDir,
    '--name',
    handler.handlerName,
    '--version',
    handler.version,
    '--seq',
    String(seq),
  ])) as AgentStatusVerdict;
}

export function settingsFileText(settings: HandlerSettingsInput): string {
  return pythonJsonDumps({
    runtimeSettings: [
      {
        handlerSettings: {
          publicSettings: settings.publicSettings ?? null,
          protectedSettings: settings.protectedSettings ?? null,
          protectedSettingsCertThumbprint: settings.protectedSettingsCertThumbprint ?? null,
        },
      },
    ],
  });
}

/**
 * The agent's update sequence from A to B (§6.4), for a goal state with sequence number `seq`
 * whose settings B already has (the caller wrote them after unpacking B): A.disable (if A is
 * enabled) → copy A's mrseq and status/* to B → B.update → A.uninstall → remove A's folder →
 * B.install → B.enable. Stops at the first failing step, as the agent does with
 * continueOnUpdateFailure false.
 */
export async function agentUpdate(
  from: HandlerInstance,
  to: HandlerInstance,
  seq: number,
  hooks: { beforeRemovingOld?: () => Promise<void> } = {},
): Promise<{ runs: CommandRun[]; oldUninstallStatus: string | undefined }> {
  const runs: CommandRun[] = [];
  const failed = () => runs.some((run) => run.exitCode !== 0);
  const fromState = await fs
    .readFile(path.join(from.configFolder, 'HandlerState'), 'utf8')
    .catch(() => 'NotInstalled');
  let disableExitCode: number | null = null;
  if (fromState === 'Enabled') {
    const disable = await from.run('disable', { seq });
    runs.push(disable);
    if (failed()) return { runs, oldUninstallStatus: undefined };
    disableExitCode = disable.exitCode;
  }
  const mrseq = path.join(from.dir, 'mrseq');
  if (await isFile(mrseq)) await fs.copyFile(mrseq, path.join(to.dir, 'mrseq'));
  for (const name of await fs.readdir(from.statusFolder).catch(() => [])) {
    const source = path.join(from.statusFolder, name);
    if (await isFile(source))
      await fs.cp(source, path.join(to.statusFolder, name), { preserveTimestamps: true });
  }
  runs.push(
    await to.run('update', {
      seq,
      updatingFromVersion: from.version,
      updatingToVersion: to.version,
      disableExitCode,
    }),
  );
  if (failed()) return { runs, oldUninstallStatus: undefined };
  const uninstall = await from.run('uninstall', { seq });
  runs.push(uninstall);
  const oldUninstallStatus = await from.readStatusText(seq);
  if (failed()) return { runs, oldUninstallStatus };
  await hooks.beforeRemovingOld?.();
  await fs.rm(from.dir, { recursive: true, force: true });
  const uninstallExitCode = uninstall.exitCode ?? undefined;
  runs.push(
    await to.run('install', {
      seq,
      ...(uninstallExitCode === undefined ? {} : { uninstallExitCode }),
    }),
  );
  if (failed()) return { runs, oldUninstallStatus };
  runs.push(
    await to.run('enable', {
      seq,
      ...(uninstallExitCode === undefined ? {} : { uninstallExitCode }),
    }),
  );
  return { runs, oldUninstallStatus };
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

async function listFiles(dir: string): Promise<string[]> {
  const files: string[] = [];
  for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) files.push(...(await listFiles(full)));
    else files.push(full);
  }
  return files;
}

async function isFile(file: string): Promise<boolean> {
  return fs.stat(file).then(
    (stat) => stat.isFile(),
    () => false,
  );
}

function readDescriptor(fd: number): string {
  const chunks: Buffer[] = [];
  const buffer = Buffer.alloc(64 * 1024);
  let position = 0;
  for (;;) {
    const read = readSyncAt(fd, buffer, position);
    if (read === 0) break;
    chunks.push(Buffer.from(buffer.subarray(0, read)));
    position += read;
  }
  return Buffer.concat(chunks).toString('utf8');
}

function readSyncAt(fd: number, buffer: Buffer, position: number): number {
  return readSync(fd, buffer, 0, buffer.length, position);
}

/**
 * Ends a helper process started with a stdin pipe: closes its stdin, sends SIGTERM, and SIGKILL
 * if it is still there 3 s later; resolves when it has exited.
 */
export async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.stdin?.end();
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
  await exited;
  clearTimeout(timer);
}

/** Asserts a command's exit code, showing its output when it is wrong. */
export function assertExit(run: CommandRun, expected: number): void {
  assert.equal(
    run.exitCode,
    expected,
    `${run.operation} exited ${run.exitCode}${run.signal ? ` (${run.signal})` : ''}, expected ${expected}\nstdout: ${run.stdout}\nstderr: ${run.stderr}`,
  );
  assert.equal(run.timedOut, false, `${run.operation} hit the agent's timeout`);
}

/** Runs a program with an explicit environment and returns its output (for test set-up). */
export async function runTool(
  file: string,
  args: readonly string[],
  options: {
    cwd?: string;
    input?: string | Buffer;
    env?: Record<string, string>;
    /** A tool that runs longer is killed and the call fails, naming it: a test never hangs. */
    timeoutMs?: number;
  } = {},
): Promise<{ stdout: string; stderr: string; exitCode: number }> {
  return new Promise((resolve, reject) => {
    const timeoutMs = options.timeoutMs ?? 120_000;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${file} ${args.join(' ')} did not finish in ${timeoutMs / 1000} s`));
    }, timeoutMs);
    const child = spawn(file, args, {
      cwd: options.cwd ?? os.tmpdir(),
      env: options.env ?? { PATH: AGENT_PATH, LANG: 'C' },
      stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    // A program that exits without reading its input must not fail the test with EPIPE.
    child.stdin?.on('error', () => undefined);
    child.stdout?.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr?.on('data', (chunk: Buffer) => err.push(chunk));
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        exitCode: code ?? -1,
      });
    });
    child.stdin?.end(options.input);
  });
}

/**
 * The agent's uninstall (§6.3): `disable` if the handler is enabled, then `uninstall` (whose
 * failure the agent only logs), then the handler folder is removed. `beforeRemoving` runs while
 * the folder still exists, to read its status files.
 */
export async function agentUninstall(
  handler: HandlerInstance,
  seq: number | null,
  hooks: { beforeRemoving?: () => Promise<void> } = {},
): Promise<CommandRun[]> {
  const runs: CommandRun[] = [];
  const state = await fs
    .readFile(path.join(handler.configFolder, 'HandlerState'), 'utf8')
    .catch(() => 'NotInstalled');
  if (state === 'NotInstalled') return runs;
  if (state === 'Enabled') {
    const disable = await handler.run('disable', { seq });
    runs.push(disable);
    if (disable.exitCode !== 0) return runs;
  }
  runs.push(await handler.run('uninstall', { seq }));
  await hooks.beforeRemoving?.();
  await fs.rm(handler.dir, { recursive: true, force: true });
  return runs;
}

/**
 * Reads `status/<seq>.status` every few milliseconds while a command runs, the way a status
 * reporting pass could catch it at any moment, and collects every `status.status` seen.
 */
export function watchStatus(handler: HandlerInstance, seq: number): { stop(): Promise<string[]> } {
  const seen: string[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const text = await handler.readStatusText(seq);
      if (text !== undefined) {
        try {
          const value = (JSON.parse(text) as [{ status: { status: string } }])[0].status.status;
          if (seen.at(-1) !== value) seen.push(value);
        } catch {
          seen.push(`unparsable: ${text.slice(0, 200)}`);
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 3));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return seen;
    },
  };
}

/** Files under `dirs` (recursively) whose content contains `needle`. */
export async function filesContaining(dirs: readonly string[], needle: string): Promise<string[]> {
  const hits: string[] = [];
  for (const dir of dirs) {
    const files = await listFiles(dir).catch(() => [] as string[]);
    for (const file of files) {
      const content = await fs.readFile(file).catch(() => undefined);
      if (content?.includes(needle)) hits.push(file);
    }
  }
  return hits;
}

// ---------------------------------------------------------------------------------------------
// Protected settings: certificates as the agent stores them, and settings encrypted to them
// ---------------------------------------------------------------------------------------------

/**
 * A self-signed certificate and key made with openssl in `workDir`. With `store`, they are put
 * where the agent keeps the certificates of a goal state: `<Lib.Dir>/<TP>.crt` and `<TP>.prv`,
 * TP being the uppercase SHA-1 fingerprint without colons (§3.2).
 */
export async function makeTestCertificate(
  sandbox: AgentSandbox,
  workDir: string,
  name: string,
  { store }: { store: boolean },
): Promise<{ thumbprint: string; crt: string; key: string }> {
  const key = path.join(workDir, `${name}.key`);
  const crt = path.join(workDir, `${name}.crt`);
  const made = await runTool('openssl', [
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    key,
    '-out',
    crt,
    '-subj',
    `/CN=aad-handler-test-${name}`,
    '-days',
    '2',
  ]);
  if (made.exitCode !== 0) throw new Error(`openssl req failed: ${made.stderr}`);
  const fingerprint = await runTool('openssl', [
    'x509',
    '-in',
    crt,
    '-noout',
    '-fingerprint',
    '-sha1',
  ]);
  const thumbprint = fingerprint.stdout.trim().split('=')[1]?.replaceAll(':', '').toUpperCase();
  if (!thumbprint || !/^[0-9A-F]{40}$/.test(thumbprint)) {
    throw new Error(`unexpected fingerprint output: ${fingerprint.stdout}${fingerprint.stderr}`);
  }
  if (store) {
    await fs.copyFile(crt, path.join(sandbox.libDir, `${thumbprint}.crt`));
    await fs.copyFile(key, path.join(sandbox.libDir, `${thumbprint}.prv`));
  }
  return { thumbprint, crt, key };
}

/** `protectedSettings` as CRP sends them: `openssl smime -encrypt -binary -aes256 -outform DER | base64 -w0`. */
export async function encryptSettings(crt: string, plain: string): Promise<string> {
  const der = `${crt}.${randomBytes(6).toString('hex')}.p7m`;
  try {
    const encrypted = await runTool(
      '/bin/sh',
      [
        '-c',
        'set -e; openssl smime -encrypt -binary -aes256 -outform DER -out "$2" "$1"; base64 -w0 "$2"',
        'encrypt',
        crt,
        der,
      ],
      { input: plain },
    );
    if (encrypted.exitCode !== 0 || encrypted.stdout.trim() === '') {
      throw new Error(`openssl smime -encrypt failed: ${encrypted.stderr}`);
    }
    return encrypted.stdout.trim();
  } finally {
    await fs.rm(der, { force: true });
  }
}
