/**
 * `npm run bump -- hotfix|build|minor|major`: the next extension version, written to its one place
 * (package.json's `version`, mirrored in package-lock.json as npm does), and a CHANGELOG.md entry
 * opened for it. The entry is only a heading: `npm run release` refuses the version until the
 * changes are written under it.
 *
 * The four-part version MAJOR.MINOR.BUILD.REVISION is the npm version MAJOR.MINOR.BUILD+REVISION
 * (src/version.ts). A hotfix raises REVISION, a build raises BUILD, a minor version MINOR, a major
 * version MAJOR; the parts after the one raised start again at 0.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { toExtensionVersion } from '../src/version.js';
import { changelogHeading } from './release/repository.js';

/** The kinds of version change, from the smallest. */
export const BUMPS = ['hotfix', 'build', 'minor', 'major'] as const;
export type Bump = (typeof BUMPS)[number];

/** The npm version after a bump: `1.0.4+2` with `hotfix` is `1.0.4+3`, with `minor` `1.1.0`. */
export function bumpNpmVersion(npmVersion: string, bump: Bump): string {
  const parts = toExtensionVersion(npmVersion).split('.').map(Number);
  const position = { major: 0, minor: 1, build: 2, hotfix: 3 }[bump];
  const next = parts.map((part, index) =>
    index < position ? part : index === position ? part + 1 : 0,
  );
  const [major, minor, build, revision] = next;
  return `${major}.${minor}.${build}${revision ? `+${revision}` : ''}`;
}

/** CHANGELOG.md with an empty entry for `version` opened above the newest one. */
export function openChangelogEntry(changelog: string, version: string): string {
  if (changelogHeading(version).test(changelog)) {
    throw new Error(`CHANGELOG.md already has an entry for ${version}`);
  }
  const heading = `## ${version} (unreleased)\n\n`;
  const first = /^## /m.exec(changelog);
  if (!first) return `${changelog.trimEnd()}\n\n${heading}`;
  return changelog.slice(0, first.index) + heading + changelog.slice(first.index);
}

async function rewriteJson(file: string, change: (json: Record<string, unknown>) => void) {
  const json = JSON.parse(await fs.readFile(file, 'utf8')) as Record<string, unknown>;
  change(json);
  await fs.writeFile(file, `${JSON.stringify(json, null, 2)}\n`);
}

/** Bumps the version of the checkout at `root`; returns the old and new four-part versions. */
export async function bumpVersion(root: string, bump: Bump): Promise<{ from: string; to: string }> {
  const packageFile = path.join(root, 'package.json');
  const current = (JSON.parse(await fs.readFile(packageFile, 'utf8')) as { version: string })
    .version;
  const next = bumpNpmVersion(current, bump);
  const changelogFile = path.join(root, 'CHANGELOG.md');
  const changelog = openChangelogEntry(
    await fs.readFile(changelogFile, 'utf8'),
    toExtensionVersion(next),
  );
  await rewriteJson(packageFile, (json) => {
    json.version = next;
  });
  await rewriteJson(path.join(root, 'package-lock.json'), (lock) => {
    lock.version = next;
    const packages = lock.packages as Record<string, { version?: string }> | undefined;
    const self = packages?.[''];
    if (self) self.version = next;
  });
  await fs.writeFile(changelogFile, changelog);
  return { from: toExtensionVersion(current), to: toExtensionVersion(next) };
}

async function main(): Promise<void> {
  const bump = process.argv[2];
  if (!BUMPS.includes(bump as Bump) || process.argv.length !== 3) {
    process.stderr.write(`usage: npm run bump -- ${BUMPS.join('|')}\n`);
    process.exitCode = 2;
    return;
  }
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  try {
    const { from, to } = await bumpVersion(root, bump as Bump);
    process.stdout.write(
      `${from} -> ${to}: package.json and package-lock.json changed, CHANGELOG.md has an empty "## ${to}" entry; write the changes under it, commit, then npm run release (RELEASING.md)\n`,
    );
  } catch (error) {
    process.stderr.write(`npm run bump: ${(error as Error).message}\n`);
    process.exitCode = 1;
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await main();
}
