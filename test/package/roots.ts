/**
 * Isolated package-manager roots for the package tests; never the test machine's own package
 * database.
 *
 * - {@link debianRoot}: a fresh copy of a minimal Debian 12 root (`debootstrap --variant=minbase
 *   bookworm`, slimmed like Debian's container images, cached outside the repository in
 *   testCacheDir()/debootstrap-bookworm-minbase-v1; built on first use in about a minute, copied
 *   with `cp -a` in 0.4 to 6 s depending on the machine's load). Commands run inside with
 *   {@link runIn}: `unshare --mount --pid --fork --root=<root> --mount-proc=/proc`, i.e. chrooted,
 *   with their own /proc and process namespace (all gone when the command ends; nothing is mounted
 *   on the machine), on the machine's network (loopback servers are reachable) or, with
 *   `launcher: world.wrap`, inside a world.
 * - {@link rpmRoot}: an empty root for `dnf --installroot`, `zypper --root` and `rpm --root`, with
 *   its repositories configured by files inside it (`etc/yum.repos.d`, `etc/zypp/repos.d`), its rpm
 *   database at <root>/var/lib/rpm, its own dnf.conf, and a HOME whose .rpmmacros pins the database
 *   path (Debian's rpm would otherwise use ~/.rpmdb), so that no tool reads or writes the
 *   machine's or the user's rpm/dnf/zypper state.
 * - {@link vmRoot}: a fresh copy of the root of a test VM, for the handler to change as it changes
 *   a VM (see vm.ts, which runs it chrooted in a world): `debian` (the debootstrap root with what
 *   the handler runs beyond minbase), `rpm` (that root with Debian's dnf, zypper, rpm and gpg,
 *   set up as on RHEL and SUSE) or `agent` (the `debian` root with Python 3 for the guest agent,
 *   see agent-vm.ts), each cached in testCacheDir()/vm-<kind>-bookworm-v1 and built on
 *   first use by the root's own apt from deb.debian.org (5 to 25 s each, measured; copied in
 *   0.2 to 8 s depending on the machine's load: 90, 280 and 130 MB).
 *
 * Nothing here changes `process.env` or the working directory.
 */
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { AGENT_PATH, type Launcher, runTool, testCacheDir } from './agent-driver.js';
import { type AptRepo, buildRpm, dearmored, type TestKey } from './repos.js';

export interface ToolResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

export interface RootRunOptions {
  /** Added to (and overriding) the defaults: PATH, LANG=C, HOME=/root, DEBIAN_FRONTEND=noninteractive. */
  env?: Record<string, string>;
  input?: string;
  /** Default 300 s. */
  timeoutMs?: number;
  /**
   * Start the command through this wrapper, e.g. `world.wrap` to run it inside a world
   * (`world.wrapOutside` for a world with a root: this command chroots by itself).
   */
  launcher?: Launcher;
}

/** PATH inside the roots: Debian's default for root. */
export const ROOT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** unshare's options for private mount and pid namespaces whose processes die with the command. */
const PRIVATE_NAMESPACES = [
  '--mount',
  '--pid',
  '--fork',
  '--kill-child',
  '--propagation',
  'private',
];

/** The argv that runs `argv` chrooted into `root` with a private mount, pid namespace and /proc. */
export function inRootArgv(root: string, argv: readonly string[]): string[] {
  return ['unshare', ...PRIVATE_NAMESPACES, `--root=${root}`, '--mount-proc=/proc', '--', ...argv];
}

/** Runs `argv` inside the root (see the file comment); never throws for a non-zero exit. */
export async function runIn(
  root: string,
  argv: readonly string[],
  options: RootRunOptions = {},
): Promise<ToolResult> {
  const inner = inRootArgv(root, argv);
  const [file, ...args] = options.launcher ? options.launcher(inner, '/') : inner;
  return runTool(file ?? 'unshare', args, {
    env: {
      PATH: ROOT_PATH,
      LANG: 'C',
      HOME: '/root',
      DEBIAN_FRONTEND: 'noninteractive',
      ...options.env,
    },
    timeoutMs: options.timeoutMs ?? 300_000,
    ...(options.input === undefined ? {} : { input: options.input }),
  });
}

/** Throws with the command's output unless it exited 0. */
export function assertOk(result: ToolResult, what: string): ToolResult {
  if (result.exitCode !== 0) {
    throw new Error(
      `${what} failed (exit ${result.exitCode}):\n${result.stderr}\n${result.stdout}`,
    );
  }
  return result;
}

function inside(root: string, file: string): string {
  if (!path.posix.isAbsolute(file)) throw new Error(`paths in a root are absolute: ${file}`);
  const resolved = path.join(root, path.posix.normalize(file));
  if (resolved !== root && !resolved.startsWith(`${root}/`)) throw new Error(`outside: ${file}`);
  return resolved;
}

interface RootFiles {
  /** The root on the machine. */
  readonly dir: string;
  /** The machine's path of a path inside the root. */
  path(file: string): string;
  /** A file inside the root, or undefined when absent. */
  readFile(file: string): Promise<string | undefined>;
  /** Writes a file inside the root (creating its folders). */
  writeFile(file: string, content: string | Buffer, mode?: number): Promise<void>;
  /** Removes the root. */
  remove(): Promise<void>;
}

function rootFiles(dir: string, removeDir: string): RootFiles {
  return {
    dir,
    path: (file) => inside(dir, file),
    async readFile(file) {
      return fs.readFile(inside(dir, file), 'utf8').catch((error: NodeJS.ErrnoException) => {
        if (error.code === 'ENOENT') return undefined;
        throw error;
      });
    },
    async writeFile(file, content, mode = 0o644) {
      const target = inside(dir, file);
      await fs.mkdir(path.dirname(target), { recursive: true });
      await fs.writeFile(target, content, { mode });
      await fs.chmod(target, mode);
    },
    remove: () => fs.rm(removeDir, { recursive: true, force: true }),
  };
}

// ---------------------------------------------------------------------------------------------
// Debian
// ---------------------------------------------------------------------------------------------

export const DEBIAN_SUITE = 'bookworm';
export const DEBIAN_MIRROR = 'http://deb.debian.org/debian';

export interface AptSource {
  /** /etc/apt/sources.list.d/<name>.list */
  listFile: string;
  /** /usr/share/keyrings/<name>.gpg */
  keyring: string;
  /** The `deb …` line written. */
  line: string;
  /** apt options that make apt read this source and no other. */
  onlyThisSource: string[];
}

export interface DebianRoot extends RootFiles {
  /** runIn(this root, …). */
  run(argv: readonly string[], options?: RootRunOptions): Promise<ToolResult>;
  /**
   * Trusts `key` (dearmored into /usr/share/keyrings/<name>.gpg) for the repository at
   * `<baseUrl>/<repo.path>` and writes /etc/apt/sources.list.d/<name>.list:
   * `deb [arch=amd64 signed-by=…] <baseUrl>/<repo.path> <codename> main`.
   */
  addAptSource(options: {
    baseUrl: string;
    repo: AptRepo;
    key: TestKey;
    name?: string;
    arch?: string;
  }): Promise<AptSource>;
}

/** Where the debootstrapped root is cached (outside the repository). */
export function debootstrapCacheDir(): string {
  // -v1: the layout of the cache (slimmed); a new layout gets a new name.
  return path.join(testCacheDir(), `debootstrap-${DEBIAN_SUITE}-minbase-v1`);
}

let debootstrapPromise: Promise<string> | undefined;

/**
 * The cached minimal Debian 12 root, made on first use with `debootstrap --variant=minbase`
 * (apt, gpgv and dpkg included; apt's downloaded archives and lists removed). Two test processes
 * that start together share one build through a lock folder. Delete the folder to rebuild it.
 */
export function ensureDebootstrapCache(): Promise<string> {
  debootstrapPromise ??= buildDebootstrapCache();
  debootstrapPromise.catch(() => {
    debootstrapPromise = undefined;
  });
  return debootstrapPromise;
}

const exists = (file: string) =>
  fs.stat(file).then(
    () => true,
    () => false,
  );

async function buildDebootstrapCache(): Promise<string> {
  const cache = debootstrapCacheDir();
  return buildCache(cache, ['usr/bin/apt-get'], async (partial) => {
    const result = await runTool(
      'debootstrap',
      ['--variant=minbase', DEBIAN_SUITE, partial, DEBIAN_MIRROR],
      { env: { PATH: AGENT_PATH, LANG: 'C' }, timeoutMs: 15 * 60_000 },
    );
    if (result.exitCode !== 0) {
      const log = await fs
        .readFile(path.join(partial, 'debootstrap', 'debootstrap.log'), 'utf8')
        .catch(() => '');
      throw new Error(
        `debootstrap --variant=minbase ${DEBIAN_SUITE} failed (exit ${result.exitCode}); it needs the Debian package debootstrap and ${DEBIAN_MIRROR}:\n${result.stderr}\n${log.slice(-4000)}`,
      );
    }
    await dropAptDownloads(partial);
    await slim(partial);
  });
}

/**
 * Builds a cache folder once: `fill` makes it in a temporary folder beside it, which is renamed
 * into place when complete, so nobody ever sees half of it. Test processes that start together
 * share one build through a lock folder (`<cache>.lock`); a lock left by a dead process is taken
 * over after 15 minutes. `complete` names files (relative to the cache) that a finished cache has.
 */
async function buildCache(
  cache: string,
  complete: readonly string[],
  fill: (partial: string) => Promise<void>,
): Promise<string> {
  const isComplete = async () => {
    for (const file of complete) if (!(await exists(path.join(cache, file)))) return false;
    return true;
  };
  if (await isComplete()) return cache;
  await fs.mkdir(path.dirname(cache), { recursive: true });
  const lock = `${cache}.lock`;
  const deadline = Date.now() + 20 * 60_000;
  for (;;) {
    try {
      await fs.mkdir(lock);
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    // Another process is building it: wait for it, or take over a lock left by a dead one.
    if (await isComplete()) return cache;
    const stat = await fs.stat(lock).catch(() => undefined);
    if (stat && Date.now() - stat.mtimeMs > 15 * 60_000) {
      await fs.rm(lock, { recursive: true, force: true });
      continue;
    }
    if (Date.now() > deadline) throw new Error(`${lock} is held for too long; remove it`);
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
  try {
    if (await isComplete()) return cache;
    const partial = await fs.mkdtemp(`${cache}.partial-`);
    try {
      await fill(partial);
      await fs.rename(partial, cache);
    } catch (error) {
      await fs.rm(partial, { recursive: true, force: true });
      throw error;
    }
    return cache;
  } finally {
    await fs.rm(lock, { recursive: true, force: true });
  }
}

/** What apt downloaded (archives, lists, its caches): not needed, and it makes every copy slower. */
async function dropAptDownloads(root: string): Promise<void> {
  for (const dir of ['var/cache/apt/archives', 'var/lib/apt/lists']) {
    for (const entry of await fs.readdir(path.join(root, dir))) {
      if (entry !== 'partial' && entry !== 'lock') {
        await fs.rm(path.join(root, dir, entry), { recursive: true, force: true });
      }
    }
  }
  await fs.rm(path.join(root, 'var/cache/apt/pkgcache.bin'), { force: true });
  await fs.rm(path.join(root, 'var/cache/apt/srcpkgcache.bin'), { force: true });
}

/**
 * What Debian's own "slim" container images leave out (documentation, manual pages, translations),
 * excluded from later installs too: a third fewer files, so a copy takes less time.
 */
const DPKG_SLIM = `# aad-handler tests: as in Debian's slim images
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
`;

async function slim(root: string): Promise<void> {
  await fs.writeFile(path.join(root, 'etc/dpkg/dpkg.cfg.d/aad-test-slim'), DPKG_SLIM);
  const empty = async (
    dir: string,
    keep: (entry: string) => Promise<boolean> = async () => false,
  ) => {
    for (const entry of await fs.readdir(path.join(root, dir)).catch(() => [])) {
      if (!(await keep(entry))) {
        await fs.rm(path.join(root, dir, entry), { recursive: true, force: true });
      }
    }
  };
  for (const dir of ['usr/share/man', 'usr/share/groff', 'usr/share/info', 'usr/share/lintian']) {
    await empty(dir);
  }
  await empty('usr/share/locale', async (entry) => entry === 'locale.alias');
  for (const pkg of await fs.readdir(path.join(root, 'usr/share/doc')).catch(() => [])) {
    await empty(`usr/share/doc/${pkg}`, async (entry) => entry === 'copyright');
  }
}

/** A fresh copy of the cached Debian 12 root, in a new temporary folder. */
export async function debianRoot(): Promise<DebianRoot> {
  return copyOfRoot(await ensureDebootstrapCache(), 'aad-debian-root-');
}

/** `cp -a` of a cached root into `<new temporary folder>/root`, with the DebianRoot helpers. */
async function copyOfRoot(cache: string, prefix: string): Promise<DebianRoot> {
  const base = await fs.mkdtemp(path.join(os.tmpdir(), prefix));
  const dir = path.join(base, 'root');
  const copy = await runTool('cp', ['-a', '--reflink=auto', cache, dir], {
    env: { PATH: AGENT_PATH, LANG: 'C' },
    timeoutMs: 300_000,
  });
  if (copy.exitCode !== 0) {
    await fs.rm(base, { recursive: true, force: true });
    throw new Error(`cp -a ${cache} ${dir} failed: ${copy.stderr}`);
  }
  const files = rootFiles(dir, base);
  return {
    ...files,
    run: (argv, options) => runIn(dir, argv, options),
    async addAptSource({ baseUrl, repo, key, name = 'microsoft-prod', arch = 'amd64' }) {
      const keyring = `/usr/share/keyrings/${name}.gpg`;
      const listFile = `/etc/apt/sources.list.d/${name}.list`;
      await files.writeFile(keyring, await dearmored(key));
      const line = `deb [arch=${arch} signed-by=${keyring}] ${baseUrl.replace(/\/+$/, '')}/${repo.path} ${repo.codename} main`;
      await files.writeFile(listFile, `${line}\n`);
      return {
        keyring,
        listFile,
        line,
        onlyThisSource: [
          '-o',
          `Dir::Etc::sourcelist=${listFile}`,
          '-o',
          'Dir::Etc::sourceparts=-',
          '-o',
          'APT::Get::List-Cleanup=0',
        ],
      };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The roots of test VMs (run chrooted in a world, see world.ts and vm.ts)
// ---------------------------------------------------------------------------------------------

/**
 * - `debian`: a Debian 12 VM (minbase, and what the handler runs beyond it);
 * - `rpm`: a VM of the rpm family (RHEL and its rebuilds, SLES, openSUSE): Debian 12 underneath,
 *   with dnf, zypper and rpm set up as on those systems; the test gives it the os-release;
 * - `agent`: the `debian` VM with what the guest agent (WALinuxAgent) needs to run in it: Python 3
 *   and the modules Debian's waagent package depends on (agent-vm.ts puts the agent's code in).
 */
export type VmKind = 'debian' | 'rpm' | 'agent';

/**
 * What the handler runs beyond minbase (which has uname, /bin/sh, dpkg-query, apt-get, apt-mark
 * and flock): openssl decrypts the protected settings.
 */
const DEBIAN_VM_PACKAGES = ['openssl'];
/** The rpm family's tools as Debian packages them; gpg is what rpm, dnf and zypper verify with. */
const RPM_VM_PACKAGES = ['dnf', 'zypper', 'rpm', 'gpg'];
/**
 * What Debian's waagent 2.7.3.0 package depends on to run (and upstream's agent too): Python 3,
 * `distro` (it names the distribution) and `distutils` (2.7.3.0 imports `distutils.version`).
 * openssl, which it also needs, is in the `debian` root already.
 */
const AGENT_VM_PACKAGES = ['python3', 'python3-distro', 'python3-distutils'];

export interface VmRoot extends DebianRoot {
  readonly kind: VmKind;
}

/** Where the root of a kind of VM is cached (outside the repository). */
export function vmRootCacheDir(kind: VmKind): string {
  // -v1: how the root is made; change the number when that changes, and it is built again.
  return path.join(testCacheDir(), `vm-${kind}-${DEBIAN_SUITE}-v1`);
}

/** Files a finished cache has (it is renamed into place when complete: this is a sanity check). */
const VM_ROOT_COMPLETE: Readonly<Record<VmKind, readonly string[]>> = {
  debian: ['usr/bin/openssl'],
  rpm: ['usr/bin/dnf', 'usr/bin/zypper', 'etc/rpm/macros', 'var/lib/rpm'],
  agent: ['usr/bin/python3', 'usr/lib/python3/dist-packages/distro', 'usr/bin/openssl'],
};

/** The packages each kind adds to the root it is made from. */
const VM_PACKAGES: Readonly<Record<VmKind, readonly string[]>> = {
  debian: DEBIAN_VM_PACKAGES,
  rpm: RPM_VM_PACKAGES,
  agent: AGENT_VM_PACKAGES,
};

const vmRootPromises = new Map<VmKind, Promise<string>>();

/**
 * The cached root of a kind of VM, made on first use (see {@link buildVmRoot}); shared by
 * concurrent test processes like the debootstrap cache. Delete the folder to rebuild it.
 */
export function ensureVmRootCache(kind: VmKind): Promise<string> {
  let promise = vmRootPromises.get(kind);
  if (!promise) {
    promise = buildVmRoot(kind);
    vmRootPromises.set(kind, promise);
    promise.catch(() => vmRootPromises.delete(kind));
  }
  return promise;
}

/** A fresh copy of the cached root of a kind of VM, in a new temporary folder. */
export async function vmRoot(kind: VmKind): Promise<VmRoot> {
  const root = await copyOfRoot(await ensureVmRootCache(kind), `aad-vm-${kind}-root-`);
  return { ...root, kind };
}

/**
 * debian: a copy of the debootstrap cache with {@link DEBIAN_VM_PACKAGES} installed by its own
 * apt, chrooted, from deb.debian.org (its sources.list) on the machine's network, and /etc/os-release
 * a file; rpm: a copy of that with {@link RPM_VM_PACKAGES} and {@link makeRpmFamily}; agent: a
 * copy of debian with {@link AGENT_VM_PACKAGES}.
 */
async function buildVmRoot(kind: VmKind): Promise<string> {
  // rpm and agent start from the debian VM, so they share its work (and its cache).
  const from =
    kind === 'debian' ? await ensureDebootstrapCache() : await ensureVmRootCache('debian');
  return buildCache(vmRootCacheDir(kind), VM_ROOT_COMPLETE[kind], async (partial) => {
    const copy = await runTool('cp', ['-a', '--reflink=auto', `${from}/.`, partial], {
      env: { PATH: AGENT_PATH, LANG: 'C' },
      timeoutMs: 300_000,
    });
    if (copy.exitCode !== 0) throw new Error(`cp -a ${from}/. ${partial} failed: ${copy.stderr}`);
    // A VM's / is 0755 (mkdtemp made 0700): apt's _apt user, and any other, must get through.
    await fs.chmod(partial, 0o755);
    await aptInstall(partial, VM_PACKAGES[kind]);
    if (kind === 'debian') {
      // Debian's /etc/os-release is a link to ../usr/lib/os-release. As a file, a world's
      // osRelease binds over it; over a link it would need an overlay on /etc, which would keep
      // everything the handler and the package managers write in /etc out of the test's sight.
      const text = await fs.readFile(path.join(partial, 'usr/lib/os-release'), 'utf8');
      await fs.rm(path.join(partial, 'etc/os-release'));
      await fs.writeFile(path.join(partial, 'etc/os-release'), text, { mode: 0o644 });
    } else if (kind === 'rpm') {
      await makeRpmFamily(partial);
    }
  });
}

/** `apt-get update` and `apt-get install --no-install-recommends` inside the root, then cleans up. */
async function aptInstall(root: string, packages: readonly string[]): Promise<void> {
  const timeoutMs = 15 * 60_000;
  assertOk(
    await runIn(root, ['apt-get', '-q', 'update'], { timeoutMs }),
    `apt-get update in ${root}`,
  );
  assertOk(
    await runIn(root, ['apt-get', '-q', '-y', 'install', '--no-install-recommends', ...packages], {
      timeoutMs,
    }),
    `apt-get install ${packages.join(' ')} in ${root}`,
  );
  assertOk(await runIn(root, ['apt-get', 'clean']), `apt-get clean in ${root}`);
  await dropAptDownloads(root);
}

/**
 * rpm's macros as RHEL and SUSE have them: the database in /var/lib/rpm (Debian's rpm keeps it in
 * ~/.rpmdb, the invoking user's), for rpm, dnf (python3-rpm) and zypper (librpm) alike.
 */
const RPM_MACROS = `# aad-handler tests: the rpm database where RHEL and SUSE keep it (Debian's rpm: ~/.rpmdb)
%_dbpath /var/lib/rpm
`;

/**
 * What makes the Debian root with the rpm tools behave like a RHEL or SUSE system: rpm's database
 * in /var/lib/rpm, RHEL 9's dnf.conf, the folders the handler writes into (/etc/yum.repos.d,
 * /etc/zypp/repos.d, /etc/pki/rpm-gpg), a releasever for dnf (a real system's release package
 * provides it; a world can bind its own over /etc/dnf/vars/releasever), and one placeholder
 * package in the rpm database (see rpmRoot: zypper fails on an empty one).
 */
async function makeRpmFamily(root: string): Promise<void> {
  const at = (file: string) => path.join(root, file);
  await fs.mkdir(at('etc/rpm'), { recursive: true });
  await fs.writeFile(at('etc/rpm/macros'), RPM_MACROS);
  for (const dir of [
    'etc/yum.repos.d',
    'etc/zypp/repos.d',
    'etc/pki/rpm-gpg',
    'etc/dnf/vars',
    'var/lib/rpm',
  ]) {
    await fs.mkdir(at(dir), { recursive: true, mode: 0o755 });
  }
  await fs.writeFile(at('etc/dnf/dnf.conf'), DNF_CONF);
  await fs.writeFile(at('etc/dnf/vars/releasever'), '9\n');
  const placeholder = await buildRpm({ name: 'aad-test-root', version: '1' });
  await fs.copyFile(placeholder, at('tmp/aad-test-root.rpm'));
  assertOk(
    await runIn(root, ['rpm', '--install', '--nosignature', '/tmp/aad-test-root.rpm']),
    'rpm --install aad-test-root',
  );
  await fs.rm(at('tmp/aad-test-root.rpm'));
}

// ---------------------------------------------------------------------------------------------
// rpm (dnf, zypper)
// ---------------------------------------------------------------------------------------------

export type RpmFamily = 'dnf' | 'zypper';

export interface RpmRepositoryOptions {
  /** e.g. `http://127.0.0.1:8080`. */
  baseUrl: string;
  /** The repository folder below it, e.g. `rhel/9/prod` or `sles/15/prod`. */
  repoPath: string;
  /** `gpgkey=`; default `<baseUrl>/keys/microsoft.asc`; `null`: no gpgkey line. */
  gpgkey?: string | null;
  /** `repo_gpgcheck=1` (dnf; zypper's gpgcheck=1 covers the metadata). Default true. */
  repoGpgcheck?: boolean;
  /** Section name and file name. Default `packages-microsoft-com-prod` in microsoft-prod.repo. */
  id?: string;
  fileName?: string;
}

export interface RpmRoot extends RootFiles {
  readonly family: RpmFamily;
  /** The environment every tool gets (its HOME holds the .rpmmacros). */
  readonly env: Readonly<Record<string, string>>;
  /** The rpm database inside the root. */
  readonly dbpath: string;
  /** `rpm --root <root> --dbpath /var/lib/rpm --import` of the key. */
  importKey(key: TestKey): Promise<void>;
  /**
   * Writes the repository file the real installer writes (aad-domain.md §2.3):
   * <root>/etc/yum.repos.d/microsoft-prod.repo (dnf) or <root>/etc/zypp/repos.d/… (zypper).
   * Returns its path inside the root.
   */
  addRepository(options: RpmRepositoryOptions): Promise<string>;
  /** `rpm --root <root> --dbpath /var/lib/rpm …`. */
  rpm(args: readonly string[], options?: { timeoutMs?: number }): Promise<ToolResult>;
  /**
   * `dnf --installroot=<root> --releasever=… --config=<root's dnf.conf> --setopt=reposdir=<root's>
   * --noplugins -y …`, isolated (see ISOLATE).
   */
  dnf(args: readonly string[], options?: { timeoutMs?: number }): Promise<ToolResult>;
  /** `zypper --root <root> --non-interactive …`, isolated (see ISOLATE). */
  zypper(args: readonly string[], options?: { timeoutMs?: number }): Promise<ToolResult>;
}

/**
 * How dnf and zypper run: in their own mount and pid namespaces (`unshare --mount --pid --fork
 * --kill-child --mount-proc`), with
 * - a tmpfs on /run/user: dnf's librepo creates /run/user/<uid> and gpg-agent its socket folders
 *   there (/run/user/0/gnupg/d.*) for the keyrings it keeps in the root's cache;
 * - for zypper, an overlay on /var/lib whose upper layer is this root's: libzypp writes its HTTP
 *   cookie jar to the machine's /var/lib/YaST2/cookies (a fixed path, not below --root);
 * and the gpg-agents gpgme starts (and leaves running) end with the tool, as the last process of
 * the pid namespace. So the machine's /run, /var/lib and process table are as before.
 */
const ISOLATE = [
  'set -e',
  'if [ -d /run/user ]; then mount -t tmpfs -o mode=0755 aad-run-user /run/user; fi',
  'if [ "$1" != - ]; then mount -t overlay aad-var-lib -o "lowerdir=/var/lib,upperdir=$1,workdir=$2" /var/lib; fi',
  'shift 2',
  'exec "$@"',
].join('\n');

function isolatedArgv(argv: readonly string[], varLib?: { upper: string; work: string }): string[] {
  return [
    ...PRIVATE_NAMESPACES,
    '--mount-proc',
    '--',
    '/bin/sh',
    '-c',
    ISOLATE,
    'sh',
    varLib?.upper ?? '-',
    varLib?.work ?? '-',
    ...argv,
  ];
}

/** RHEL 9's /etc/dnf/dnf.conf. */
const DNF_CONF = `[main]
gpgcheck=1
installonly_limit=3
clean_requirements_on_remove=True
best=True
skip_if_unavailable=False
`;

/**
 * An empty root for dnf or zypper (and rpm). `releasever` is what dnf is told (an empty root has
 * no release package to read it from); default 9.
 */
export async function rpmRoot(
  family: RpmFamily,
  options: { releasever?: string } = {},
): Promise<RpmRoot> {
  const base = await fs.mkdtemp(path.join(os.tmpdir(), `aad-${family}-root-`));
  const dir = path.join(base, 'root');
  const home = path.join(base, 'home');
  const dbpath = '/var/lib/rpm';
  await fs.mkdir(path.join(dir, dbpath.slice(1)), { recursive: true });
  await fs.mkdir(home);
  // Debian's rpm keeps its database in ~/.rpmdb (%_dbpath ~/.rpmdb); dnf (python3-rpm) and
  // zypper (librpm) read the same macros. Pin it for every tool, as on RHEL and SUSE.
  await fs.writeFile(path.join(home, '.rpmmacros'), `%_dbpath ${dbpath}\n%__gpg /usr/bin/gpg\n`);
  const env = {
    PATH: AGENT_PATH,
    LANG: 'C.UTF-8',
    HOME: home,
    // zypper logs to the machine's /var/log/zypper.log and keeps its temporary files in
    // /var/tmp, even with --root.
    ZYPP_LOGFILE: path.join(base, 'zypper.log'),
    ZYPPTMPDIR: path.join(base, 'zypp-tmp'),
  };
  await fs.mkdir(env.ZYPPTMPDIR);
  const files = rootFiles(dir, base);
  if (family === 'dnf') {
    await files.writeFile('/etc/dnf/dnf.conf', DNF_CONF);
    await fs.mkdir(files.path('/etc/yum.repos.d'), { recursive: true });
  } else {
    await fs.mkdir(files.path('/etc/zypp/repos.d'), { recursive: true });
  }
  const tool = (file: string, args: readonly string[], timeoutMs = 300_000) =>
    runTool(file, args, { env, timeoutMs });
  const rpm: RpmRoot['rpm'] = (args, opts) =>
    tool('rpm', ['--root', dir, '--dbpath', dbpath, ...args], opts?.timeoutMs);
  // A root whose rpm database holds no package at all is not a system: zypper fails to cache it
  // after removing the last package (libsolv's `rpmdb2solv` with a reference file exits 1, "no
  // error"). One placeholder package, as every real system has hundreds.
  const placeholder = await buildRpm({ name: 'aad-test-root', version: '1' });
  try {
    assertOk(await rpm(['--install', '--nosignature', placeholder]), 'rpm --install aad-test-root');
  } catch (error) {
    await files.remove();
    throw error;
  }
  return {
    ...files,
    family,
    env,
    dbpath,
    rpm,
    async importKey(key) {
      const file = path.join(base, `${key.name}-${key.keyId}.asc`);
      await fs.writeFile(file, key.armored);
      assertOk(await rpm(['--import', file]), `rpm --import ${key.name} key`);
    },
    async addRepository({
      baseUrl,
      repoPath,
      gpgkey,
      repoGpgcheck = true,
      id = 'packages-microsoft-com-prod',
      fileName = 'microsoft-prod.repo',
    }) {
      const url = baseUrl.replace(/\/+$/, '');
      const key = gpgkey === undefined ? `${url}/keys/microsoft.asc` : gpgkey;
      const lines = [
        `[${id}]`,
        `name=${id}`,
        `baseurl=${url}/${repoPath.replace(/^\/+|\/+$/g, '')}/`,
        'enabled=1',
        'gpgcheck=1',
        ...(family === 'dnf' && repoGpgcheck ? ['repo_gpgcheck=1'] : []),
        ...(key === null ? [] : [`gpgkey=${key}`]),
        ...(family === 'zypper' ? ['autorefresh=1'] : []),
        '',
      ];
      const file =
        family === 'dnf' ? `/etc/yum.repos.d/${fileName}` : `/etc/zypp/repos.d/${fileName}`;
      await files.writeFile(file, lines.join('\n'));
      return file;
    },
    dnf: (args, opts) =>
      tool(
        'unshare',
        isolatedArgv([
          'dnf',
          `--installroot=${dir}`,
          `--releasever=${options.releasever ?? '9'}`,
          `--config=${files.path('/etc/dnf/dnf.conf')}`,
          `--setopt=reposdir=${files.path('/etc/yum.repos.d')}`,
          '--noplugins',
          '--assumeyes',
          ...args,
        ]),
        opts?.timeoutMs,
      ),
    async zypper(args, opts) {
      const varLib = {
        upper: path.join(base, 'var-lib-upper'),
        work: path.join(base, 'var-lib-work'),
      };
      await fs.mkdir(varLib.upper, { recursive: true });
      await fs.mkdir(varLib.work, { recursive: true });
      return tool(
        'unshare',
        isolatedArgv(['zypper', '--root', dir, '--non-interactive', ...args], varLib),
        opts?.timeoutMs,
      );
    },
  };
}
