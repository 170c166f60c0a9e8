import semver from 'semver';
import packageJson from '../package.json' with { type: 'json' };

/**
 * The extension version, four-part as Azure publishes it (`1.0.2385.1`), derived from the one
 * place it is kept: `version` in package.json. The npm version's three parts are the first three;
 * the fourth is the semver build metadata (`1.0.2385+1` is `1.0.2385.1`), 0 when there is none.
 */
export function toExtensionVersion(npmVersion: string): string {
  const parsed = semver.parse(npmVersion);
  if (!parsed || parsed.prerelease.length > 0) {
    throw new Error(`package.json version ${npmVersion} is not MAJOR.MINOR.BUILD[+REVISION]`);
  }
  const revision = parsed.build[0] ?? '0';
  if (parsed.build.length > 1 || !/^\d+$/.test(revision)) {
    throw new Error(`package.json version ${npmVersion}: the revision after "+" must be a number`);
  }
  return `${parsed.major}.${parsed.minor}.${parsed.patch}.${Number(revision)}`;
}

export const EXTENSION_VERSION = toExtensionVersion(packageJson.version);
