/**
 * A whole test VM in one call, for the tests that let the built handler change the system (add a
 * repository, trust a key, install packages): everything it does lands in a throwaway root, never
 * on this machine.
 *
 * - `root`: a fresh copy of a cached VM root (roots.ts `vmRoot`: Debian 12, or the rpm family's
 *   tools on Debian 12 with the os-release of the test's choice);
 * - `world`: a world (world.ts) chrooted into it: the mock IMDS on 169.254.169.254, the root's own
 *   proc and /dev, the agent sandbox bound at its own path, and the file options of the test;
 * - `sandbox`: the agent's folders (agent-driver.ts), whose every handler command runs chrooted in
 *   the world, as the agent would run it on the VM;
 * - `repository` and `server`: a packages.microsoft.com stand-in (repos.ts), served inside the
 *   world on its loopback, and the public settings that point the handler at it.
 *
 *   const vm = await linuxVm({ kind: 'rpm', osRelease: await osReleaseFixture('rhel-9.4') });
 *   try {
 *     const handler = await vm.sandbox.unpack(zip, version);
 *     await handler.writeSettings(0, { publicSettings: vm.publicSettings });
 *     assertExit(await handler.run('install', { seq: 0 }), 0);
 *     // vm.root.readFile('/etc/yum.repos.d/microsoft-prod.repo'), vm.server.requests(), …
 *   } finally {
 *     await vm.close();
 *   }
 *
 * Nothing here changes `process.env` or the working directory.
 */
import { promises as fs } from 'node:fs';
import { osReleaseFixture } from '../fixtures.js';
import { AgentSandbox, type HandlerInstance } from './agent-driver.js';
import {
  buildDeb,
  type PmcRepository,
  type PmcRepositoryOptions,
  pmcRepository,
  type RepoFault,
  type RepoServer,
  serveRepository,
} from './repos.js';
import { type VmKind, type VmRoot, vmRoot } from './roots.js';
import { createWorld, imdsToken, TOKEN_PATH, type World, type WorldOptions } from './world.js';

/**
 * The world's options apply inside the VM's root (see WorldOptions.root): prefer `vm.root.writeFile`
 * for files the root lacks, since creating them through `files` or `dirs` overlays their folder
 * and what the handler then writes there stays out of `vm.root`'s sight.
 */
export interface LinuxVmOptions extends Omit<WorldOptions, 'root' | 'binds'> {
  kind: VmKind;
  /**
   * /etc/os-release (and /usr/lib/os-release, see WorldOptions). Default: for `debian` and
   * `agent`, the root's own (Debian 12); for `rpm`, RHEL 9.4's (test/fixtures/os-release/rhel-9.4).
   */
  osRelease?: string | null;
  /** Names the sandbox's temporary folder. Default: the kind. */
  label?: string;
  /** More folders of the machine shown at the same path inside (the sandbox always is). */
  binds?: readonly string[];
  /**
   * The repository stand-in. Default: for `debian` and `agent`, the Debian bookworm apt
   * repository; for `rpm`, `rhel/9/prod` and `sles/15/prod`; the default packages and the test
   * signing key.
   */
  repository?: PmcRepositoryOptions;
  /** The server's scripted faults from the start (`vm.server.setFaults` changes them later). */
  faults?: readonly RepoFault[];
}

/** `repository` public settings for the handler: the served stand-in and its signing key. */
export interface VmPublicSettings {
  [key: string]: unknown;
  repository: { baseUrl: string; keyFingerprints: string[] };
}

export interface LinuxVm {
  readonly kind: VmKind;
  readonly root: VmRoot;
  readonly world: World;
  readonly sandbox: AgentSandbox;
  readonly repository: PmcRepository;
  /** Serving `repository.root` inside the world (`server.url` is on the world's loopback). */
  readonly server: RepoServer;
  readonly publicSettings: VmPublicSettings;
  /** Removes everything (server, world, sandbox, root, repository), whatever state it is in. */
  close(): Promise<void>;
}

/** The repositories a VM gets when the test does not say (see {@link LinuxVmOptions}). */
function defaultRepositories(kind: VmKind): Pick<PmcRepositoryOptions, 'apt' | 'rpm'> {
  return kind !== 'rpm'
    ? { apt: [{ distro: 'debian', codename: 'bookworm' }], rpm: [] }
    : { apt: [], rpm: ['rhel/9/prod', 'sles/15/prod'] };
}

/**
 * dnf's `$releasever` for an os-release, as the release package of RHEL 8+ and its rebuilds
 * provides it (the major version), bound over the root's /etc/dnf/vars/releasever. `undefined`
 * when there is no VERSION_ID to take it from (the root's default, 9, stays).
 */
function releaseverFiles(
  kind: VmKind,
  osRelease: string | null | undefined,
): Record<string, string> {
  if (kind !== 'rpm' || typeof osRelease !== 'string') return {};
  const versionId = /^VERSION_ID=["']?([^"'\n]*)/m.exec(osRelease)?.[1];
  const major = versionId?.split('.')[0];
  return major ? { '/etc/dnf/vars/releasever': `${major}\n` } : {};
}

/** Builds a test VM (see the file comment). On failure, what was built is removed again. */
export async function linuxVm(options: LinuxVmOptions): Promise<LinuxVm> {
  const { kind, label, binds, repository: repositoryOptions, faults, ...worldOptions } = options;
  if (kind === 'rpm' && worldOptions.osRelease === undefined) {
    worldOptions.osRelease = await osReleaseFixture('rhel-9.4');
  }
  const undo: (() => Promise<void>)[] = [];
  const close = async () => {
    const errors: unknown[] = [];
    for (const step of undo.splice(0).reverse()) {
      try {
        await step();
      } catch (error) {
        errors.push(error);
      }
    }
    if (errors.length > 0) throw new AggregateError(errors, 'closing the test VM failed');
  };
  try {
    const root = await vmRoot(kind);
    undo.push(() => root.remove());
    let world: World | undefined;
    const sandbox = await AgentSandbox.create(label ?? kind, {
      launcher: (argv, cwd) => {
        if (!world) throw new Error('the VM is not running');
        return world.wrap(argv, cwd);
      },
    });
    undo.push(() => sandbox.cleanup());
    const repository = await pmcRepository({ ...defaultRepositories(kind), ...repositoryOptions });
    undo.push(() => repository.remove());
    world = await createWorld({
      imds: { [TOKEN_PATH]: [imdsToken('linux-vm')] },
      ...worldOptions,
      files: { ...releaseverFiles(kind, worldOptions.osRelease), ...worldOptions.files },
      root: root.dir,
      binds: [sandbox.root, ...(binds ?? [])],
    });
    const running = world;
    undo.push(() => running.close());
    // The host's node, in the world's network: the chrooted VM reaches it on its loopback.
    const server = await serveRepository(repository.root, {
      launcher: running.wrapOutside,
      ...(faults ? { faults } : {}),
    });
    undo.push(() => server.close());
    return {
      kind,
      root,
      world: running,
      sandbox,
      repository,
      server,
      publicSettings: {
        repository: { baseUrl: server.url, keyFingerprints: [repository.signingKey.fingerprint] },
      },
      close,
    };
  } catch (error) {
    await close().catch(() => undefined);
    throw error;
  }
}

/** Runs `body` with a new test VM and always closes it. */
export async function withLinuxVm<T>(
  options: LinuxVmOptions,
  body: (vm: LinuxVm) => Promise<T>,
): Promise<T> {
  const vm = await linuxVm(options);
  try {
    return await body(vm);
  } finally {
    await vm.close();
  }
}

/** Unpacks a built zip into the VM's agent folder with `publicSettings` for sequence number 0. */
export async function unpackHandler(
  vm: LinuxVm,
  zip: string,
  version: string,
  publicSettings: Record<string, unknown> = vm.publicSettings,
): Promise<HandlerInstance> {
  const handler = await vm.sandbox.unpack(zip, version);
  await handler.writeSettings(0, { publicSettings });
  return handler;
}

/**
 * A `semodule` that lists the policy modules the installed packages shipped (what the handler's
 * `semodule -l` check reads).
 */
export const LISTING_SEMODULE =
  '#!/bin/sh\nfor f in /usr/share/selinux/packages/*.pp; do [ -e "$f" ] && basename "$f" .pp; done\nexit 0\n';

/**
 * Makes a Debian VM one with an SELinux policy: installs a `selinux-policy-default` package (so the
 * handler wants aadsshlogin-selinux too) and puts `semodule` at /usr/sbin/semodule.
 */
export async function withSelinuxPolicy(vm: LinuxVm, semodule = LISTING_SEMODULE): Promise<void> {
  const policy = await buildDeb({ name: 'selinux-policy-default', version: '2.20221101' });
  await vm.root.writeFile('/tmp/selinux-policy-default.deb', await fs.readFile(policy));
  const dpkg = await vm.world.exec(['dpkg', '-i', '/tmp/selinux-policy-default.deb']);
  if (dpkg.exitCode !== 0) throw new Error(`dpkg -i selinux-policy-default: ${dpkg.stderr}`);
  await vm.root.writeFile('/usr/sbin/semodule', semodule, 0o755);
}
