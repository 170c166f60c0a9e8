/**
 * The proxy variables passed to package managers, in both cases, from whichever case the guest
 * agent's environment has (lower case wins). curl, and so dnf, tdnf and zypper, reads only the
 * lower-case `http_proxy` (the upper-case one is ignored on purpose, CGI's HTTP_PROXY header), and
 * apt reads only lower case: an agent configured with `HTTP_PROXY=` alone would otherwise send the
 * package manager straight to the internet.
 */
const NAMES = ['http_proxy', 'https_proxy', 'no_proxy'] as const;

export function proxyEnvironment(
  env: Readonly<Record<string, string | undefined>>,
): Record<string, string> {
  const result: Record<string, string> = {};
  for (const name of NAMES) {
    const value = env[name] ?? env[name.toUpperCase()];
    if (value === undefined || value.trim() === '') continue;
    result[name] = value;
    result[name.toUpperCase()] = value;
  }
  return result;
}
