import type { Processes } from '../../io/processes.js';

/**
 * Traces of the deprecated AADLoginForLinux extension (publisher
 * Microsoft.Azure.ActiveDirectory.LinuxSSH), which blocks this one: its packages, or its handler
 * folder left by the agent.
 */
export const LEGACY_PACKAGES = ['aadlogin', 'aadlogin-selinux'] as const;
export const LEGACY_HANDLER_PREFIX = 'Microsoft.Azure.ActiveDirectory.LinuxSSH.AADLoginForLinux-';

/**
 * Which legacy packages the package databases say are installed: one `dpkg-query` and one `rpm`
 * query for both names (whichever tool exists; a missing tool is a 127, not an error).
 */
export async function installedLegacyPackages(
  processes: Processes,
  signal?: AbortSignal,
): Promise<string[]> {
  const options = signal ? { signal } : {};
  const found = new Set<string>();
  const dpkg = await processes.run(
    'dpkg-query',
    // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's own format syntax
    ['-W', '-f=${Package} ${Status}\\n', ...LEGACY_PACKAGES],
    options,
  );
  for (const line of dpkg.stdout.split('\n')) {
    const [name, ...status] = line.trim().split(/\s+/);
    if (name && status.join(' ') === 'install ok installed') found.add(name);
  }
  const rpm = await processes.run('rpm', ['-q', '--qf', '%{NAME}\\n', ...LEGACY_PACKAGES], options);
  for (const line of rpm.stdout.split('\n')) {
    const name = line.trim();
    if ((LEGACY_PACKAGES as readonly string[]).includes(name)) found.add(name);
  }
  return LEGACY_PACKAGES.filter((name) => found.has(name));
}

/** The legacy handler folders among the entries of the agent's folders. */
export function legacyHandlerFolders(entries: readonly string[]): string[] {
  return entries.filter((entry) => entry.startsWith(LEGACY_HANDLER_PREFIX));
}
