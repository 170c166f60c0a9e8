import packageJson from '../package.json' with { type: 'json' };

/**
 * The extension version, four-part as Azure publishes it (`1.0.2385.1`), derived from the one
 * place it is kept: `version` in package.json. The npm version's three parts are the first three;
 * the fourth is the semver build metadata (`1.0.2385+1` is `1.0.2385.1`), 0 when there is none.
 * Prerelease versions (`1.0.0-beta`) have no four-part form and are refused.
 */
export function toExtensionVersion(npmVersion: string): string {
  const parsed = /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:\+([0-9A-Za-z.-]+))?$/.exec(
    npmVersion,
  );
  if (!parsed) {
    throw new Error(`package.json version ${npmVersion} is not MAJOR.MINOR.BUILD[+REVISION]`);
  }
  const [, major, minor, build, revision = '0'] = parsed;
  if (!/^\d+$/.test(revision)) {
    throw new Error(`package.json version ${npmVersion}: the revision after "+" must be a number`);
  }
  return `${major}.${minor}.${build}.${Number(revision)}`;
}

export const EXTENSION_VERSION = toExtensionVersion(packageJson.version);
