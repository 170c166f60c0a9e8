import type { Machine } from './machine.js';

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

/** Configuration lines without comments and blank lines, as [keyword, rest], keyword lower-cased. */
function directives(text: string): [string, string][] {
  const result: [string, string][] = [];
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.replace(/#.*$/, '').trim();
    if (!line) continue;
    const match = /^([^\s=]+)\s*=?\s*(.*)$/.exec(line);
    if (match?.[1]) result.push([match[1].toLowerCase(), match[2] ?? '']);
  }
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

/** Warnings about sshd settings that let the extension install but make Entra ID login fail. */
export function sshdWarnings(file: string, text: string): string[] {
  const warnings: string[] = [];
  let inMatch = false;
  for (const [keyword] of directives(text)) {
    if (keyword === 'match') inMatch = true;
    else if (!inMatch && (keyword === 'allowgroups' || keyword === 'denygroups')) {
      warnings.push(
        `${file} sets ${keyword === 'allowgroups' ? 'AllowGroups' : 'DenyGroups'} outside a Match block: the first Entra ID login of a user fails because their group is created at that login. Move it into a Match block that excludes Entra ID users.`,
      );
    }
  }
  return [...new Set(warnings)];
}

/** A warning when `ssh -V`'s answer (`OpenSSH_7.4p1, …`) is older than 7.8. */
export function opensshWarning(versionText: string): string | undefined {
  const match = /OpenSSH_(\d+)\.(\d+)/.exec(versionText);
  if (!match) return undefined;
  const [major, minor] = [Number(match[1]), Number(match[2])];
  if (major > 7 || (major === 7 && minor >= 8)) return undefined;
  return `OpenSSH ${major}.${minor} is older than 7.8: current clients' RSA-SHA2 certificates may be refused. Update OpenSSH, or sign in with "az ssh vm" using an older signature algorithm.`;
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

/** The sshd settings that let the extension install but make Entra ID login fail later. */
export async function sshWarnings(machine: Machine): Promise<string[]> {
  const warnings: string[] = [];
  for (const { file, text } of await sshdFiles(machine)) warnings.push(...sshdWarnings(file, text));
  return warnings;
}
