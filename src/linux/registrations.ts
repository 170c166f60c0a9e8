import type { Machine } from './machine.js';
import { OPENSSH_PACKAGES } from './packages.js';

/**
 * What the aadsshlogin packages must have registered for Entra ID login to work, read from the
 * files they change (pure functions of the files' text), and the sshd settings that make the
 * first login fail later. Each problem names the file and the fix.
 */

export interface Problem {
  /** A short name for the substatus entry. */
  what: 'sshd' | 'nsswitch' | 'pam' | 'selinux';
  file: string;
  message: string;
}

export const CERT_HANDLER = '/usr/sbin/aad_certhandler';

/**
 * Configuration lines without comments and blank lines, as [keyword, rest, line number], the
 * keyword lower-cased.
 */
function directives(text: string): [string, string, number][] {
  const result: [string, string, number][] = [];
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = raw.replace(/#.*$/, '').trim();
    if (!line) return;
    const match = /^([^\s=]+)\s*=?\s*(.*)$/.exec(line);
    if (match?.[1]) result.push([match[1].toLowerCase(), match[2] ?? '', index + 1]);
  });
  return result;
}

/** `AuthorizedKeysCommand /usr/sbin/aad_certhandler …` in sshd_config or a file it includes. */
export function checkSshd(files: readonly { file: string; text: string }[]): Problem | undefined {
  const registered = files.some(({ text }) =>
    directives(text).some(
      ([keyword, value]) =>
        keyword === 'authorizedkeyscommand' && value.split(/\s+/)[0] === CERT_HANDLER,
    ),
  );
  if (registered) return undefined;
  return {
    what: 'sshd',
    file: files[0]?.file ?? '/etc/ssh/sshd_config',
    message: `${files[0]?.file ?? '/etc/ssh/sshd_config'} has no "AuthorizedKeysCommand ${CERT_HANDLER}": the aadsshlogin package did not register with sshd. Reinstall the extension; if sshd_config is managed by configuration tooling, let it keep the Match block that aadsshlogin adds.`,
  };
}

/** `aad` among the sources of `passwd:` in nsswitch.conf. */
export function checkNsswitch(file: string, text: string): Problem | undefined {
  const passwd = directives(text).find(
    ([keyword]) => keyword === 'passwd:' || keyword === 'passwd',
  );
  const sources = passwd?.[1].replace(/^:/, '').split(/\s+/) ?? [];
  if (sources.includes('aad')) return undefined;
  return {
    what: 'nsswitch',
    file,
    message: `${file} does not list "aad" for passwd: the aadsshlogin package did not register its NSS module. Add "aad" to the passwd and group lines (or reinstall the extension) and check that configuration tooling does not rewrite ${file}.`,
  };
}

/** A `pam_aad` module in some file under /etc/pam.d. */
export function checkPam(files: readonly { file: string; text: string }[]): Problem | undefined {
  if (
    files.some(({ text }) =>
      directives(text).some(([keyword, value]) => `${keyword} ${value}`.includes('pam_aad')),
    )
  ) {
    return undefined;
  }
  return {
    what: 'pam',
    file: '/etc/pam.d',
    message:
      'No file under /etc/pam.d uses pam_aad: the aadsshlogin package did not register with PAM. On Debian and Ubuntu this happens when /etc/pam.d/common-* were modified locally (pam-auth-update refuses to touch them): review the local changes, run "pam-auth-update --force", then apply the extension again.',
  };
}

/** The `aad_permissions` module in `semodule -l`'s answer. */
export function checkSelinux(semoduleList: string): Problem | undefined {
  if (semoduleList.split('\n').some((line) => line.trim().split(/\s+/)[0] === 'aad_permissions')) {
    return undefined;
  }
  return {
    what: 'selinux',
    file: 'semodule -l',
    message:
      'The SELinux module aad_permissions is not loaded although aadsshlogin-selinux is installed: check "semodule -l" and the package\'s install messages (policycoreutils may be too old), then apply the extension again.',
  };
}

/**
 * The checks that warn and never fail, in the order of their substatus entries: settings that let
 * the extension install but make Entra ID login fail or surprise later.
 */
export const WARNING_CHECKS = [
  'SshdGroups',
  'AuthorizedKeysCommand',
  'OpenSshVersion',
  'PamLocalChanges',
] as const;
export type WarningCheck = (typeof WARNING_CHECKS)[number];

/** One warning check's result: its warnings, or what it found in order when there are none. */
export interface WarningResult {
  name: WarningCheck;
  warnings: string[];
  fine: string;
}

/** `AllowGroups`/`DenyGroups` outside a Match block: the first Entra ID login fails. */
export function sshdWarnings(file: string, text: string): string[] {
  const warnings: string[] = [];
  let inMatch = false;
  for (const [keyword, , line] of directives(text)) {
    if (keyword === 'match') inMatch = true;
    else if (!inMatch && (keyword === 'allowgroups' || keyword === 'denygroups')) {
      warnings.push(
        `${file} line ${line} sets ${keyword === 'allowgroups' ? 'AllowGroups' : 'DenyGroups'} outside a Match block: the first Entra ID login of a user fails because their group is created at that login. Move it into a Match block that excludes Entra ID users.`,
      );
    }
  }
  return warnings;
}

/**
 * An `AuthorizedKeysCommand` that is not aadsshlogin's. sshd takes the first one that applies to
 * a connection, so one in a Match block that also matches Entra ID users, ahead of aadsshlogin's,
 * makes their login fail; a global one is overridden by aadsshlogin's Match block, but the two
 * still have to be kept apart by whoever changes the file next.
 */
export function authorizedKeysCommandWarnings(file: string, text: string): string[] {
  const warnings: string[] = [];
  for (const [keyword, value, line] of directives(text)) {
    if (keyword !== 'authorizedkeyscommand') continue;
    const command = value.split(/\s+/)[0] ?? '';
    if (command === CERT_HANDLER || command.toLowerCase() === 'none') continue;
    warnings.push(
      `${file} line ${line} sets AuthorizedKeysCommand ${command}, which is not aadsshlogin's (${CERT_HANDLER}): sshd uses only the first AuthorizedKeysCommand that applies to a connection, so Entra ID logins fail wherever this one applies to them. Keep it inside a Match block that excludes Entra ID users (names with @ and object IDs), after aadsshlogin's, or remove it.`,
    );
  }
  return warnings;
}

/**
 * A warning when OpenSSH is older than 7.8, which cannot check the RSA-SHA2 certificate
 * signatures that current clients and `az ssh vm` send. `version` is a package version
 * (`1:9.2p1-2+deb12u3`, `7.4p1-22.el7`) or what `ssh -V` prints (`OpenSSH_7.4p1, …`).
 */
export function opensshWarning(version: string): string | undefined {
  const match =
    /^(?:\d+:)?(\d+)\.(\d+)/.exec(version.trim()) ?? /OpenSSH_(\d+)\.(\d+)/.exec(version);
  if (!match) return undefined;
  const [major, minor] = [Number(match[1]), Number(match[2])];
  if (major > 7 || (major === 7 && minor >= 8)) return undefined;
  return `OpenSSH ${major}.${minor} is older than 7.8: it cannot check the RSA-SHA2 signatures of the certificates that current clients and "az ssh vm" send, so Entra ID logins may be refused. Update the OpenSSH server (openssh-server) to 7.8 or later.`;
}

/** The PAM files pam-auth-update generates on Debian and Ubuntu (`/etc/pam.d/common-<type>`). */
export const PAM_AUTH_UPDATE_TYPES = [
  'auth',
  'account',
  'password',
  'session',
  'session-noninteractive',
] as const;

const PRIMARY_BLOCK = /^# here are the per-package modules \(the "Primary" block\)/;
const FALLBACK = /^# here's the fallback if no module succeeds/;
const ADDITIONAL_BLOCK = /^# and here are more per-package modules \(the "Additional" block\)/;
const BLOCK_END = /^# end of pam-auth-update config/;

/**
 * Whether pam-auth-update would refuse to change `/etc/pam.d/common-<type>` because it was edited
 * locally, and why (undefined when it would not). aadsshlogin adds pam_aad with pam-auth-update,
 * which without --force leaves a locally modified file alone: the registration is then missing.
 *
 * The method is pam-auth-update's own (`diff_profiles` in libpam-runtime's
 * /usr/sbin/pam-auth-update, ported line for line): it keeps what it last wrote for each type in
 * /var/lib/pam/<type> ("Module: <name>" headers, then that module's lines), and accepts the file
 * when every line of its managed blocks (from the "Primary" marker to the fallback marker, and
 * from the "Additional" marker to the end marker) matches, in order, a saved line's control and
 * module path, jump counts ignored; changed options are merged, not refused. Lines outside the
 * blocks are always kept, so they are no problem. A missing marker, a missing saved file, or a
 * block line without a saved counterpart is a local modification.
 */
export function pamLocalChange(
  type: string,
  current: string | undefined,
  saved: string | undefined,
): string | undefined {
  const file = `/etc/pam.d/common-${type}`;
  const remedy = `pam-auth-update will not add pam_aad to it, so Entra ID login fails. Move local lines outside the block pam-auth-update manages (from "# here are the per-package modules" to "# end of pam-auth-update config"), or run "pam-auth-update --force" (which replaces the local lines), then apply the extension again.`;
  if (current === undefined) return undefined;
  if (saved === undefined) {
    return `${file}: /var/lib/pam/${type}, pam-auth-update's record of what it wrote, is missing, so it treats ${file} as locally modified: ${remedy}`;
  }
  const jumpCount = (line: string) => line.replace(/(\[[^0-9]*)[0-9]+(.*\])/g, '$1$2');
  const modules = saved
    .split('\n')
    .filter((line) => line && !line.startsWith('Module: '))
    .map((line) => {
      const normalised = jumpCount(line).replace(/(\[.*)end(.*\])/g, '$1$2');
      return /^((\[[^\]]+\]|\w+)\s+\S+)/.exec(normalised)?.[1];
    });
  const stackType = type.replace(/-noninteractive$/, '');
  const stripType = (line: string) => line.replace(new RegExp(`^${stackType}\\s+`), '');
  let state: 'before' | 'primary' | 'between' | 'additional' | 'done' = 'before';
  const lines = current.split('\n');
  for (const [index, raw] of lines.entries()) {
    if (state === 'done') break;
    if (state === 'before') {
      if (PRIMARY_BLOCK.test(raw)) state = 'primary';
      continue;
    }
    if (state === 'primary' && FALLBACK.test(raw)) {
      state = 'between';
      continue;
    }
    if (state === 'between') {
      if (ADDITIONAL_BLOCK.test(raw)) state = 'additional';
      continue;
    }
    if (state === 'additional' && BLOCK_END.test(raw)) {
      state = 'done';
      continue;
    }
    // The last line of a file ending with a newline is no line.
    if (index === lines.length - 1 && raw === '') break;
    const line = jumpCount(stripType(raw));
    let found = false;
    while (!found && modules.length > 0) {
      const module = modules.shift();
      found = module !== undefined && line.startsWith(module);
    }
    if (!found) {
      return `${file} line ${index + 1} ("${raw.trim()}"), inside the block pam-auth-update manages, is not what it wrote (see /var/lib/pam/${type}): ${remedy}`;
    }
  }
  if (state === 'before' || state === 'primary' || state === 'between') {
    return `${file} lacks the markers of the block pam-auth-update manages: ${remedy}`;
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Reading them from the VM
// ---------------------------------------------------------------------------------------------

/** What the packages must have registered, read from the files they change. */
export async function verifyRegistrations(
  machine: Machine,
  options: { selinux: boolean; signal: AbortSignal },
): Promise<Problem[]> {
  const read = async (file: string) => (await machine.readFile(file))?.toString('utf8');
  const problems: Problem[] = [];
  const sshd = await sshdFiles(machine);
  const sshdProblem = checkSshd(sshd);
  if (sshdProblem) problems.push(sshdProblem);
  const nsswitch = checkNsswitch('/etc/nsswitch.conf', (await read('/etc/nsswitch.conf')) ?? '');
  if (nsswitch) problems.push(nsswitch);
  const pamFiles: { file: string; text: string }[] = [];
  for (const entry of await machine.listDirectory('/etc/pam.d')) {
    const text = await read(`/etc/pam.d/${entry}`).catch(() => undefined);
    if (text !== undefined) pamFiles.push({ file: `/etc/pam.d/${entry}`, text });
  }
  const pam = checkPam(pamFiles);
  if (pam) problems.push(pam);
  if (options.selinux) {
    const listed = await machine.processes.run('semodule', ['-l'], { signal: options.signal });
    const selinux = checkSelinux(listed.exitCode === 0 ? listed.stdout : '');
    if (selinux) problems.push(selinux);
  }
  return problems;
}

/** sshd_config and the drop-in files it usually includes. */
async function sshdFiles(machine: Machine): Promise<{ file: string; text: string }[]> {
  const files: { file: string; text: string }[] = [];
  const main = (await machine.readFile('/etc/ssh/sshd_config'))?.toString('utf8');
  files.push({ file: '/etc/ssh/sshd_config', text: main ?? '' });
  for (const entry of (await machine.listDirectory('/etc/ssh/sshd_config.d')).sort()) {
    if (!entry.endsWith('.conf')) continue;
    const text = (await machine.readFile(`/etc/ssh/sshd_config.d/${entry}`))?.toString('utf8');
    if (text !== undefined) files.push({ file: `/etc/ssh/sshd_config.d/${entry}`, text });
  }
  return files;
}

/**
 * The warning checks, each with its result. They read files only: the OpenSSH server's version
 * comes from the package query the installer already made (`installed`: name → version), not
 * from running sshd, so a converged enable stays one process.
 */
export async function warningChecks(
  machine: Machine,
  installed: ReadonlyMap<string, string>,
): Promise<WarningResult[]> {
  const sshd = await sshdFiles(machine);
  const groups = sshd.flatMap(({ file, text }) => sshdWarnings(file, text));
  const commands = sshd.flatMap(({ file, text }) => authorizedKeysCommandWarnings(file, text));
  const opensshPackage = OPENSSH_PACKAGES.find((name) => installed.has(name));
  const opensshVersion = opensshPackage ? installed.get(opensshPackage) : undefined;
  const openssh = opensshVersion ? opensshWarning(opensshVersion) : undefined;
  const pam: string[] = [];
  // pam-auth-update's profiles (libpam-runtime): Debian and Ubuntu, where it writes common-*.
  const managed = (await machine.listDirectory('/usr/share/pam-configs')).length > 0;
  if (managed) {
    for (const type of PAM_AUTH_UPDATE_TYPES) {
      const read = async (file: string) => (await machine.readFile(file))?.toString('utf8');
      const change = pamLocalChange(
        type,
        await read(`/etc/pam.d/common-${type}`),
        await read(`/var/lib/pam/${type}`),
      );
      if (change) pam.push(change);
    }
  }
  const files = sshd.map(({ file }) => file).join(', ');
  return [
    {
      name: 'SshdGroups',
      warnings: groups,
      fine: `No AllowGroups or DenyGroups outside a Match block in ${files}.`,
    },
    {
      name: 'AuthorizedKeysCommand',
      warnings: commands,
      fine: `No AuthorizedKeysCommand other than aadsshlogin's in ${files}.`,
    },
    {
      name: 'OpenSshVersion',
      warnings: openssh ? [`${opensshPackage} ${opensshVersion} is installed. ${openssh}`] : [],
      fine: opensshVersion
        ? `The OpenSSH server is ${opensshVersion} (7.8 or later).`
        : `No OpenSSH server package (${OPENSSH_PACKAGES.join(', ')}) is installed.`,
    },
    {
      name: 'PamLocalChanges',
      warnings: pam,
      fine: managed
        ? 'pam-auth-update manages /etc/pam.d/common-* without local changes in its blocks.'
        : 'No /usr/share/pam-configs: pam-auth-update does not manage PAM here.',
    },
  ];
}

/** The warnings about sshd_config and its drop-in files at once (the diagnose command's sshd item). */
export async function sshWarnings(machine: Machine): Promise<string[]> {
  return (await sshdFiles(machine)).flatMap(({ file, text }) => [
    ...sshdWarnings(file, text),
    ...authorizedKeysCommandWarnings(file, text),
  ]);
}
