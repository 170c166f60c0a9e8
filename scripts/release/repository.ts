/**
 * What the release asks the checkout: is the working tree clean, which versions were released
 * (git tags `v<four-part version>`), and what CHANGELOG.md says about a version.
 */
import { execFileSync } from 'node:child_process';
import { compareVersions } from '../../src/linux/checks/support-matrix.js';

/** A release tag: `v` and the four-part extension version, e.g. `v1.0.2385.1`. */
export const RELEASE_TAG = /^v(\d+\.\d+\.\d+\.\d+)$/;

function git(checkout: string, args: readonly string[]): string {
  return execFileSync('git', args, {
    cwd: checkout,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/**
 * The files that make the working tree differ from HEAD: changed, staged, deleted or untracked
 * (ignored files such as dist/ and node_modules do not count). Throws when it is not a checkout.
 */
export function uncleanFiles(checkout: string): string[] {
  return git(checkout, ['status', '--porcelain=v1', '--untracked-files=all'])
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => line.slice(3));
}

/** The commit checked out, and its time (for the SBOM). */
export function headCommit(checkout: string): { id: string; time: Date } {
  const [id = '', seconds = '0'] = git(checkout, ['log', '-1', '--format=%H %ct'])
    .trim()
    .split(' ');
  return { id, time: new Date(Number(seconds) * 1000) };
}

/** The commit a tag points at. */
export function tagCommit(checkout: string, tag: string): string {
  return git(checkout, ['rev-parse', `${tag}^{commit}`]).trim();
}

/** The highest release tag in the checkout, or undefined when nothing was released yet. */
export function lastReleaseTag(checkout: string): { tag: string; version: string } | undefined {
  const versions = git(checkout, ['tag', '--list', 'v*'])
    .split('\n')
    .map((tag) => RELEASE_TAG.exec(tag.trim())?.[1])
    .filter((version): version is string => version !== undefined)
    .sort(compareVersions);
  const version = versions.at(-1);
  return version ? { tag: `v${version}`, version } : undefined;
}

/** The heading that opens a version's CHANGELOG entry: `## 1.0.2385.1` and anything after. */
export function changelogHeading(version: string): RegExp {
  return new RegExp(`^## ${version.replaceAll('.', '\\.')}(?![\\d.])(.*)$`, 'm');
}

/**
 * The CHANGELOG.md entry of a version: its heading line and the text up to the next `## `
 * heading. Undefined when there is no such heading or the entry says nothing.
 */
export function changelogEntry(
  changelog: string,
  version: string,
): { heading: string; body: string } | undefined {
  const heading = changelogHeading(version).exec(changelog);
  if (!heading) return undefined;
  const rest = changelog.slice(heading.index + heading[0].length);
  const next = /^## /m.exec(rest);
  const body = (next ? rest.slice(0, next.index) : rest).trim();
  return body ? { heading: heading[0], body } : undefined;
}
