import { type Cloud, cloudNamed, clouds } from '../../clouds.js';
import { failureKinds } from '../../failures.js';
import { errorMessage } from '../../io/files.js';
import { HIMDS_ADDRESS, HimdsChallengeFailed } from '../../io/himds.js';
import { describeBody, IMDS_HOST, type Imds } from '../../io/imds.js';
import { ARC_INSTANCE_PATH, ARC_TOKEN_PATH } from '../checks/arc-identity.js';
import { TOKEN_PATH } from '../checks/identity.js';
import { installedLegacyPackages, legacyHandlerFolders } from '../checks/legacy.js';
import {
  formatKib,
  MEMINFO_FILE,
  MINIMUM_MEMTOTAL_KIB,
  parseMemTotalKib,
} from '../checks/memory.js';
import { OS_RELEASE_FILES, parseOsRelease } from '../checks/os-release.js';
import { SUPPORTED_ARCHITECTURES, supportVerdict } from '../checks/support-matrix.js';
import type { Machine } from '../machine.js';
import type { MachineKind } from '../machine-kind.js';
import { describeHolders, findLockHolders } from '../package-lock.js';
import { packageManagers } from '../package-managers/index.js';
import { MAIN_PACKAGE, SELINUX_PACKAGE } from '../packages.js';
import {
  CERT_HANDLER,
  opensshWarning,
  sshWarnings,
  verifyRegistrations,
} from '../registrations.js';
import { type AgentProxy, imdsBypassed } from './proxy.js';
import type { Item } from './report.js';

/** What the items read of the VM; the real one is the VM itself, unit tests pass fakes. */
export interface DiagnoseHost {
  machine: Machine;
  imds: Imds;
  /** `uname -m` style. */
  architecture: string;
  handlerDir: string;
  /** Free bytes and inodes of the file system holding `folder`, or `undefined` when it is absent. */
  statfs(
    folder: string,
  ): Promise<{ freeBytes: number; freeInodes: number; inodes: number } | undefined>;
  /** The connection check of proxy.ts, or a fake. */
  reach(host: string, environment: Record<string, string>): Promise<string | undefined>;
  /** How long any one network question may take. */
  timeoutMs: number;
}

async function readText(host: DiagnoseHost, file: string): Promise<string | undefined> {
  return (await host.machine.readFile(file).catch(() => undefined))?.toString('utf8');
}

export async function operatingSystemItems(host: DiagnoseHost): Promise<Item[]> {
  let text: string | undefined;
  for (const file of OS_RELEASE_FILES) {
    text = await readText(host, file);
    if (text !== undefined) break;
  }
  const architecture: Item = (SUPPORTED_ARCHITECTURES as readonly string[]).includes(
    host.architecture,
  )
    ? {
        id: 'architecture',
        title: 'Architecture',
        verdict: 'ok',
        detail: `${host.architecture} is supported.`,
      }
    : {
        id: 'architecture',
        title: 'Architecture',
        verdict: 'problem',
        detail: `${host.architecture}: only x86_64 and aarch64 are supported.`,
        remedy: failureKinds.unsupportedOperatingSystem.remedy,
      };
  if (text === undefined) {
    return [
      {
        id: 'os',
        title: 'Distribution',
        verdict: 'problem',
        detail: `Neither ${OS_RELEASE_FILES.join(' nor ')} can be read, so the distribution is unknown.`,
        remedy: failureKinds.unsupportedOperatingSystem.remedy,
      },
      architecture,
    ];
  }
  const os = parseOsRelease(text);
  const verdict = supportVerdict(os, host.architecture);
  const name = os.prettyName ?? `${os.id} ${os.versionId ?? ''}`.trim();
  return [
    verdict.supported
      ? {
          id: 'os',
          title: 'Distribution',
          verdict: 'ok',
          detail: `${name} is supported (${verdict.row.source}).`,
        }
      : {
          id: 'os',
          title: 'Distribution',
          verdict: 'problem',
          detail: verdict.reason,
          remedy: failureKinds.unsupportedOperatingSystem.remedy,
        },
    architecture,
  ];
}

export async function memoryItem(host: DiagnoseHost): Promise<Item> {
  const kib = parseMemTotalKib((await readText(host, MEMINFO_FILE)) ?? '');
  const base = { id: 'memory', title: 'Memory' } as const;
  if (kib === undefined)
    return {
      ...base,
      verdict: 'warning',
      detail: `${MEMINFO_FILE} has no MemTotal line.`,
      remedy: 'Check that /proc is mounted.',
    };
  if (kib < MINIMUM_MEMTOTAL_KIB)
    return {
      ...base,
      verdict: 'problem',
      detail: `${formatKib(kib)} (MemTotal ${kib} kB); at least ${MINIMUM_MEMTOTAL_KIB} kB is needed.`,
      remedy: failureKinds.insufficientMemory.remedy,
    };
  return { ...base, verdict: 'ok', detail: `${formatKib(kib)} (MemTotal ${kib} kB).` };
}

/** Below these, installing the packages may fail (they need tens of MiB) or will. */
const DISK = {
  warnBytes: 512 * 1024 * 1024,
  failBytes: 100 * 1024 * 1024,
  warnInodes: 10_000,
  failInodes: 1_000,
};
export const DISK_FOLDERS = ['/var', '/usr', '/etc'] as const;

export async function diskItems(host: DiagnoseHost): Promise<Item[]> {
  const items: Item[] = [];
  for (const folder of DISK_FOLDERS) {
    const base = { id: `disk:${folder}`, title: `Free space under ${folder}` };
    const found = await host.statfs(folder).catch((error: unknown) => errorMessage(error));
    if (found === undefined || typeof found === 'string') {
      items.push({
        ...base,
        verdict: 'warning',
        detail: `${folder} cannot be examined${found ? `: ${found}` : ''}.`,
        remedy: `Check ${folder}.`,
      });
      continue;
    }
    const mib = Math.round(found.freeBytes / 1024 / 1024);
    const detail = `${mib} MiB and ${found.freeInodes} of ${found.inodes} inodes free.`;
    // File systems without an inode limit (btrfs) report 0 inodes in all.
    const inodes = found.inodes === 0 ? Number.POSITIVE_INFINITY : found.freeInodes;
    const remedy = `Free space (and inodes) on the file system holding ${folder}: remove old kernels, logs and package caches (apt clean, dnf clean all), or grow the disk.`;
    if (found.freeBytes < DISK.failBytes || inodes < DISK.failInodes)
      items.push({
        ...base,
        verdict: 'problem',
        detail: `Only ${detail} The packages cannot be installed.`,
        remedy,
      });
    else if (found.freeBytes < DISK.warnBytes || inodes < DISK.warnInodes)
      items.push({ ...base, verdict: 'warning', detail: `Only ${detail}`, remedy });
    else items.push({ ...base, verdict: 'ok', detail });
  }
  return items;
}

/** Mount points and options of /proc/self/mountinfo (octal escapes such as \040 decoded). */
export function parseMountinfo(text: string): { mountPoint: string; options: string[] }[] {
  const mounts: { mountPoint: string; options: string[] }[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    if (fields.length < 6 || !fields[4] || !fields[5]) continue;
    const mountPoint = fields[4].replace(/\\([0-7]{3})/g, (_, octal: string) =>
      String.fromCharCode(Number.parseInt(octal, 8)),
    );
    mounts.push({ mountPoint, options: fields[5].split(',') });
  }
  return mounts;
}

/** The mount a path is on: the last listed mount whose point is the longest prefix of the path. */
function mountOf(mounts: ReturnType<typeof parseMountinfo>, file: string) {
  let best: (typeof mounts)[number] | undefined;
  for (const mount of mounts) {
    const prefix = mount.mountPoint === '/' ? '/' : `${mount.mountPoint}/`;
    if (file !== mount.mountPoint && !file.startsWith(prefix)) continue;
    if (!best || mount.mountPoint.length >= best.mountPoint.length) best = mount;
  }
  return best;
}

export async function noexecItem(host: DiagnoseHost): Promise<Item> {
  const mounts = parseMountinfo((await readText(host, '/proc/self/mountinfo')) ?? '');
  const base = { id: 'noexec', title: 'noexec mounts' };
  const noexec = (folder: string) => mountOf(mounts, folder)?.options.includes('noexec') ?? false;
  const required = [...new Set([host.handlerDir, '/var/lib/waagent'])].filter(noexec);
  const tmp = noexec('/tmp');
  if (required.length)
    return {
      ...base,
      verdict: 'problem',
      detail: `${required.join(' and ')} ${required.length === 1 ? 'is' : 'are'} on a file system mounted noexec: the handler cannot run.`,
      remedy:
        'Remount the file system holding /var/lib/waagent without noexec (and remove noexec from its /etc/fstab entry), then apply the extension again.',
    };
  if (tmp)
    return {
      ...base,
      verdict: 'warning',
      detail: '/tmp is mounted noexec; package scripts that run programs from /tmp may fail.',
      remedy:
        'If installing the packages fails in their scripts, remount /tmp without noexec for the installation.',
    };
  return {
    ...base,
    verdict: 'ok',
    detail: `${host.handlerDir}, /var/lib/waagent and /tmp allow programs to run.`,
  };
}

export async function lockItem(host: DiagnoseHost): Promise<Item> {
  const files = [
    ...new Set(Object.values(packageManagers).flatMap((manager) => manager.lockFiles)),
  ];
  const holders = await findLockHolders(files, host.machine.lockProbe);
  const base = { id: 'package-locks', title: 'Package manager locks' };
  if (holders.length === 0)
    return { ...base, verdict: 'ok', detail: 'Nobody holds the package manager.' };
  return {
    ...base,
    verdict: 'warning',
    detail: `${describeHolders(holders)}.`,
    remedy: `The extension waits for the package manager; if the holder never ends, find out why (e.g. "ps -fp ${holders[0]?.pid}"), let it finish or stop it, then apply the extension again.`,
  };
}

export async function cloudInitItem(host: DiagnoseHost): Promise<Item> {
  const base = { id: 'cloud-init', title: 'cloud-init' };
  const result = await host.machine.processes.run('cloud-init', ['status']);
  if (result.exitCode === 127)
    return { ...base, verdict: 'ok', detail: 'cloud-init is not installed.' };
  const status = /^status:\s*(\S+)/m.exec(result.stdout)?.[1];
  if (status === 'running')
    return {
      ...base,
      verdict: 'warning',
      detail:
        'cloud-init is still running; it may hold the package manager or rewrite sshd_config.',
      remedy: 'Wait for "cloud-init status --wait", then apply the extension again if it failed.',
    };
  if (status === 'done' || status === 'disabled' || status === 'not')
    return {
      ...base,
      verdict: 'ok',
      detail: `cloud-init status: ${status === 'not' ? 'not run' : status}.`,
    };
  return {
    ...base,
    verdict: 'warning',
    detail: `cloud-init status: ${status ?? (result.stdout.trim() || result.stderr.trim() || `exit code ${result.exitCode}`)}.`,
    remedy:
      'See "cloud-init status --long" and /var/log/cloud-init.log: a failed cloud-init may have left the VM half configured.',
  };
}

/** The identity (one token request, no waiting for a new identity) and the cloud IMDS names. */
export async function imdsItems(
  host: DiagnoseHost,
): Promise<{ items: Item[]; cloud: Cloud | undefined }> {
  const base = {
    id: 'imds-identity',
    title: `IMDS (${IMDS_HOST}, directly) and the system-assigned identity`,
  };
  const ask = (path: string) => host.imds.get(path, { timeoutMs: host.timeoutMs });
  let identity: Item;
  try {
    const answer = await ask(TOKEN_PATH);
    if (answer.status === 200 && /"access_token"\s*:\s*"[^"]/.test(answer.body))
      identity = {
        ...base,
        verdict: 'ok',
        detail:
          'IMDS gave a token for the sign-in application: the VM has a system-assigned managed identity.',
      };
    else if (answer.status === 400 && /identity not found/i.test(answer.body))
      identity = {
        ...base,
        verdict: 'problem',
        detail: `IMDS answered "Identity not found": the VM has no system-assigned managed identity.`,
        remedy: failureKinds.noSystemAssignedIdentity.remedy,
      };
    else
      identity = {
        ...base,
        verdict: 'problem',
        detail: `IMDS answered the identity request with HTTP ${answer.status}${describeBody(answer.body)}.`,
        remedy: failureKinds.imdsUnreachable.remedy,
      };
  } catch (error) {
    identity = {
      ...base,
      verdict: 'problem',
      detail: `IMDS did not answer: ${errorMessage(error)}.`,
      remedy: failureKinds.imdsUnreachable.remedy,
    };
  }
  let cloud: Cloud | undefined;
  if (identity.verdict === 'ok' || !/did not answer/.test(identity.detail)) {
    const answer = await ask(
      '/metadata/instance/compute/azEnvironment?api-version=2018-10-01&format=text',
    ).catch(() => undefined);
    cloud = answer?.status === 200 ? cloudNamed(answer.body) : undefined;
  }
  return { items: [identity], cloud };
}

/** The machine kind, as the lifecycle commands decide it (machine-kind.ts). */
export function machineKindItem(machine: MachineKind): Item {
  return {
    id: 'machine-kind',
    title: 'Machine kind',
    verdict: 'ok',
    detail: `${machine.description}: ${machine.evidence}.`,
  };
}

/**
 * On an Azure Arc-enabled server: the identity from the agent's HIMDS (one token request with its
 * key-file challenge; the key and the token are never shown) and the cloud it names.
 */
export async function himdsItems(
  himds: Imds,
  timeoutMs: number,
): Promise<{ items: Item[]; cloud: Cloud | undefined }> {
  const base = {
    id: 'himds-identity',
    title: `HIMDS (${HIMDS_ADDRESS}, directly) and the identity`,
  };
  const problem = (detail: string): Item => ({
    ...base,
    verdict: 'problem',
    detail,
    remedy: failureKinds.arcAgentUnavailable.remedy,
  });
  let identity: Item;
  try {
    const answer = await himds.get(ARC_TOKEN_PATH, { timeoutMs });
    identity =
      answer.status === 200 && /"access_token"\s*:\s*"[^"]/.test(answer.body)
        ? {
            ...base,
            verdict: 'ok',
            detail:
              "HIMDS gave a token for the sign-in application after its key-file challenge: the Arc-enabled server's identity is there.",
          }
        : problem(
            `HIMDS answered the identity request with HTTP ${answer.status}${describeBody(answer.body)}.`,
          );
  } catch (error) {
    identity =
      error instanceof HimdsChallengeFailed
        ? problem(`${error.message}.`)
        : problem(
            `HIMDS did not answer: ${errorMessage(error)}. The agent is stopped, disconnected or expired.`,
          );
  }
  let cloud: Cloud | undefined;
  if (identity.verdict === 'ok') {
    const answer = await himds.get(ARC_INSTANCE_PATH, { timeoutMs }).catch(() => undefined);
    try {
      const azEnvironment = (
        JSON.parse(answer?.body ?? '') as { compute?: { azEnvironment?: unknown } }
      ).compute?.azEnvironment;
      cloud = typeof azEnvironment === 'string' ? cloudNamed(azEnvironment) : undefined;
    } catch {
      cloud = undefined;
    }
  }
  return { items: [identity], cloud };
}

export function proxyItem(proxy: AgentProxy): Item {
  const base = { id: 'proxy', title: "The agent's proxy" };
  const { environment } = proxy;
  const proxies = [
    environment.http_proxy && `http_proxy=${environment.http_proxy}`,
    environment.https_proxy && `https_proxy=${environment.https_proxy}`,
  ].filter(Boolean);
  const conf = proxy.agentConf
    ? ` ${'/etc/waagent.conf'} sets HttpProxy ${proxy.agentConf} (used by the agent itself only).`
    : '';
  if (proxies.length === 0) {
    if (proxy.agentConf)
      return {
        ...base,
        verdict: 'warning',
        detail: `The agent's service has no http_proxy/https_proxy, so the extension and the package manager connect directly.${conf}`,
        remedy:
          "If the VM reaches the internet only through that proxy, set http_proxy, https_proxy and no_proxy=169.254.169.254 in a drop-in of the agent's service (systemctl edit walinuxagent or waagent: [Service] Environment=...), then restart the agent.",
      };
    return {
      ...base,
      verdict: 'ok',
      detail:
        "No proxy: the agent's service has no http_proxy/https_proxy and waagent.conf no HttpProxy.",
    };
  }
  const detail = `${proxies.join(', ')}${environment.no_proxy ? `, no_proxy=${environment.no_proxy}` : ''} (from ${proxy.source}).${conf}`;
  if (!imdsBypassed(environment))
    return {
      ...base,
      verdict: 'warning',
      detail: `${detail} no_proxy does not cover ${IMDS_HOST}: this handler reaches IMDS directly anyway, but other programs started by the agent may send IMDS requests to the proxy.`,
      remedy: `Add ${IMDS_HOST} to no_proxy (and NO_PROXY) in the agent's service environment.`,
    };
  return { ...base, verdict: 'ok', detail: `${detail} no_proxy covers ${IMDS_HOST}.` };
}

/** The repository (as any HTTP answer) and the cloud's sign-in and RBAC endpoints, through the agent's proxy. */
export async function reachabilityItems(
  host: DiagnoseHost,
  options: {
    repository: string;
    repositorySource: string;
    cloud: Cloud | undefined;
    environment: Record<string, string>;
  },
): Promise<Item[]> {
  const items: Item[] = [];
  const problem = await fetchProblem(host, options.repository, options.environment);
  const base = {
    id: 'reach:repository',
    title: `Package repository ${options.repository} (${options.repositorySource})`,
  };
  items.push(
    problem
      ? {
          ...base,
          verdict: 'problem',
          detail: problem,
          remedy: failureKinds.repositoryUnavailable.remedy,
        }
      : { ...base, verdict: 'ok', detail: 'It answers HTTP.' },
  );
  const cloud = options.cloud ?? clouds[0];
  for (const [kind, endpoint] of [
    ['sign-in', cloud?.signIn],
    ['rbac', cloud?.rbac],
  ] as const) {
    if (!endpoint) continue;
    const itemBase = {
      id: `reach:${kind}`,
      title: `${kind === 'sign-in' ? 'Sign-in' : 'RBAC'} endpoint ${endpoint} (${cloud?.name}${options.cloud ? '' : ', assumed: IMDS did not name the cloud'})`,
    };
    const unreachable = await host.reach(endpoint, options.environment);
    items.push(
      unreachable
        ? {
            ...itemBase,
            verdict: 'problem',
            detail: `${unreachable}. Entra ID login needs it.`,
            remedy: `Allow the VM to reach ${endpoint} on TCP 443, directly or through the proxy in the agent's service environment.`,
          }
        : { ...itemBase, verdict: 'ok', detail: 'Port 443 is reachable.' },
    );
  }
  return items;
}

async function fetchProblem(host: DiagnoseHost, url: string, environment: Record<string, string>) {
  // fetchText goes through the proxy that process.env names (see http.ts): the agent's, here.
  for (const name of ['http_proxy', 'https_proxy', 'no_proxy']) {
    delete process.env[name];
    delete process.env[name.toUpperCase()];
  }
  Object.assign(process.env, environment);
  const result = await host.machine
    .fetchText(`${url}/`, { budgetMs: host.timeoutMs, timeoutMs: host.timeoutMs })
    .catch((error: unknown) => ({ ok: false as const, problem: errorMessage(error) }));
  return result.ok ? undefined : result.problem;
}

export function selinuxItem(enforce: string | undefined): Item {
  const mode =
    enforce === undefined ? 'disabled' : enforce.trim() === '1' ? 'enforcing' : 'permissive';
  return { id: 'selinux-mode', title: 'SELinux', verdict: 'ok', detail: `SELinux is ${mode}.` };
}

export function fipsItem(enabled: string | undefined): Item {
  return {
    id: 'fips',
    title: 'FIPS mode',
    verdict: 'ok',
    detail:
      enabled?.trim() === '1'
        ? 'The kernel runs in FIPS mode.'
        : 'The kernel does not run in FIPS mode.',
  };
}

export async function legacyItem(host: DiagnoseHost): Promise<Item> {
  const packages = await installedLegacyPackages(host.machine.processes);
  const folders = legacyHandlerFolders(await host.machine.listDirectory('/var/lib/waagent')).map(
    (entry) => `/var/lib/waagent/${entry}`,
  );
  const base = { id: 'legacy', title: 'AADLoginForLinux remnants' };
  if (packages.length === 0 && folders.length === 0)
    return { ...base, verdict: 'ok', detail: 'No trace of AADLoginForLinux.' };
  return {
    ...base,
    verdict: 'problem',
    detail: `AADLoginForLinux is still on the VM: ${[...packages.map((name) => `package ${name}`), ...folders].join(', ')}.`,
    remedy: failureKinds.legacyExtensionInstalled.remedy,
  };
}

/** The installed version of a package from dpkg or rpm, or `undefined`. */
async function installedVersion(host: DiagnoseHost, name: string): Promise<string | undefined> {
  const dpkg = await host.machine.processes.run('dpkg-query', [
    '-W',
    // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's own format syntax
    '-f=${Status} ${Version}',
    name,
  ]);
  const installed = /^install ok installed (\S+)/.exec(dpkg.stdout.trim());
  if (dpkg.exitCode === 0 && installed?.[1]) return installed[1];
  const rpm = await host.machine.processes.run('rpm', [
    '-q',
    '--qf',
    '%{VERSION}-%{RELEASE}',
    name,
  ]);
  return rpm.exitCode === 0 && rpm.stdout.trim() ? rpm.stdout.trim() : undefined;
}

/** The installed aadsshlogin, then each registration it needs, and the sshd settings that break login. */
export async function packageItems(host: DiagnoseHost): Promise<Item[]> {
  const version = await installedVersion(host, MAIN_PACKAGE);
  if (!version)
    return [
      {
        id: 'aadsshlogin',
        title: 'aadsshlogin package',
        verdict: 'warning',
        detail: 'aadsshlogin is not installed, so its registrations are not checked.',
        remedy: 'Install the extension (or apply it again).',
      },
    ];
  const selinux = await installedVersion(host, SELINUX_PACKAGE);
  const items: Item[] = [
    {
      id: 'aadsshlogin',
      title: 'aadsshlogin package',
      verdict: 'ok',
      detail: `aadsshlogin ${version}${selinux ? ` and aadsshlogin-selinux ${selinux}` : ''} installed.`,
    },
  ];
  const problems = await verifyRegistrations(host.machine, {
    selinux: selinux !== undefined,
    signal: AbortSignal.timeout(60_000),
  });
  const effective = await effectiveSshdConfig(host);
  const titles = { sshd: 'sshd', nsswitch: 'NSS', pam: 'PAM', selinux: 'SELinux module' } as const;
  for (const what of [
    'sshd',
    'nsswitch',
    'pam',
    ...(selinux ? (['selinux'] as const) : []),
  ] as const) {
    const base = { id: `registration:${what}`, title: `${titles[what]} registration` };
    if (what === 'sshd' && effective.settings) {
      items.push(sshdRegistrationItem(base, effective.settings));
      continue;
    }
    const problem = problems.find((candidate) => candidate.what === what);
    const where =
      what === 'sshd' ? `${registrationWhere.sshd}; ${effective.why}` : registrationWhere[what];
    items.push(
      problem
        ? {
            ...base,
            verdict: 'problem',
            detail: problem.message,
            remedy: failureKinds.registrationMissing.remedy,
          }
        : { ...base, verdict: 'ok', detail: `aadsshlogin is registered (${where}).` },
    );
  }
  const warnings = await sshWarnings(host.machine);
  for (const keyword of ['allowgroups', 'denygroups']) {
    const value = effective.settings?.get(keyword);
    const name = keyword === 'allowgroups' ? 'AllowGroups' : 'DenyGroups';
    if (value && !warnings.some((warning) => warning.includes(name)))
      warnings.push(
        `sshd's effective configuration for an Entra ID user sets ${name} ${value}: the first Entra ID login of a user fails because their group is created at that login. Exclude Entra ID users from it with a Match block.`,
      );
  }
  const openssh = await host.machine.processes.run('ssh', ['-V']);
  const old = opensshWarning(`${openssh.stderr}${openssh.stdout}`);
  if (old) warnings.push(old);
  items.push(
    warnings.length
      ? {
          id: 'sshd-settings',
          title: 'sshd settings',
          verdict: 'warning',
          detail: warnings.join(' '),
          remedy: 'Change the settings as each sentence says.',
        }
      : {
          id: 'sshd-settings',
          title: 'sshd settings',
          verdict: 'ok',
          detail: 'No setting of sshd_config blocks Entra ID login.',
        },
  );
  return items;
}

/** A user name that aadsshlogin's `Match User *@*,…` block applies to, as an Entra ID login's. */
export const ENTRA_TEST_USER = 'diagnose@contoso.com';
const SSHD_TEST_ARGS = ['-T', '-C', `user=${ENTRA_TEST_USER},host=localhost,addr=127.0.0.1`];

/**
 * sshd's effective configuration for an Entra ID user (`sshd -T -C user=…`): what sshd really
 * applies, Match blocks and Include files evaluated in its first-match-wins order. `undefined`
 * settings, and why, when sshd cannot tell (not installed, no host keys, a configuration error).
 */
async function effectiveSshdConfig(
  host: DiagnoseHost,
): Promise<{ settings: Map<string, string> | undefined; why: string }> {
  const result = await host.machine.processes.run('sshd', SSHD_TEST_ARGS);
  if (result.exitCode !== 0) {
    const said = (result.stderr.trim() || `exit code ${result.exitCode}`).split('\n')[0];
    return {
      settings: undefined,
      why: `read from the files: "sshd ${SSHD_TEST_ARGS.join(' ')}" failed (${result.exitCode === 127 ? 'sshd is not installed' : said})`,
    };
  }
  const settings = new Map<string, string>();
  for (const line of result.stdout.split('\n')) {
    const match = /^(\S+)\s+(.*)$/.exec(line.trim());
    if (match?.[1] && match[2] !== undefined) settings.set(match[1].toLowerCase(), match[2]);
  }
  return { settings, why: 'sshd -T' };
}

function sshdRegistrationItem(
  base: { id: string; title: string },
  settings: Map<string, string>,
): Item {
  const command = settings.get('authorizedkeyscommand') ?? 'none';
  if (command.split(/\s+/)[0] === CERT_HANDLER)
    return {
      ...base,
      verdict: 'ok',
      detail: `aadsshlogin is registered (sshd's effective configuration for an Entra ID user, ${ENTRA_TEST_USER}, has AuthorizedKeysCommand ${command}).`,
    };
  return {
    ...base,
    verdict: 'problem',
    detail: `sshd's effective configuration for an Entra ID user (sshd ${SSHD_TEST_ARGS.join(' ')}) has AuthorizedKeysCommand ${command}, not ${CERT_HANDLER}: an earlier Match block or setting takes precedence over the one aadsshlogin added (sshd uses the first value it reads), or the package did not register.`,
    remedy: `Make sure no Match block or AuthorizedKeysCommand before aadsshlogin's Match block in /etc/ssh/sshd_config (or the files it includes) applies to Entra ID users, or reinstall the extension. ${failureKinds.registrationMissing.remedy}`,
  };
}

const registrationWhere = {
  sshd: 'AuthorizedKeysCommand in sshd_config',
  nsswitch: '"aad" for passwd in /etc/nsswitch.conf',
  pam: 'pam_aad under /etc/pam.d',
  selinux: 'aad_permissions in semodule -l',
} as const;
