/**
 * The release itself, as a function the CLI (scripts/release.ts) and the tests call: check the
 * checkout, build, check what was built against the definitions, then write
 * dist/release/<version>/. Nothing is written to the release folder until every check passed.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { compareVersions } from '../../src/linux/checks/support-matrix.js';
import { toExtensionVersion } from '../../src/version.js';
import { extensionPackages, PUBLISHER } from '../package.js';
import { checkExtension, type ExpectedExtension, zipName } from './checks.js';
import {
  checkTemplates,
  fillArmDefinition,
  fillExtensionImage,
  makePublic,
  type Placement,
  type Regions,
  renameType,
} from './definitions.js';
import type { SizeLimits } from './limits.js';
import {
  changelogEntry,
  headCommit,
  lastReleaseTag,
  tagCommit,
  uncleanFiles,
} from './repository.js';
import { type BundleContents, bundleContents, bunRuntime, cycloneDx } from './sbom.js';

/** What a release is asked to do. */
export interface ReleaseOptions {
  /** The checkout to release (its root). */
  checkout: string;
  regions: Regions;
  /** The URL of the folder the zips will be uploaded to; the MediaLinks stay empty without it. */
  mediaBase?: string;
  /**
   * Publish under internal test types instead (`Test` makes `AADSSHLoginForLinuxTest`): the same
   * zips and checks, written to dist/release/<version>-<suffix>/ (RELEASING.md, "Test first").
   */
  testTypeSuffix?: string;
  /** Make the version public (`IsInternalExtension` false): the last step of a rollout. */
  public?: boolean;
  limits: SizeLimits;
  /** Run `npm run package` first (the CLI always does; tests may reuse a build of the same commit). */
  build: boolean;
  /** Where progress lines go. */
  log: (line: string) => void;
}

/** A release that did not happen, with every reason. */
export class ReleaseRefused extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`the release is refused:\n${problems.map((problem) => `  - ${problem}`).join('\n')}`);
    this.name = 'ReleaseRefused';
  }
}

/** What a release wrote. */
export interface ReleaseResult {
  version: string;
  directory: string;
  /** The files in the directory, SHA256SUMS last. */
  files: string[];
}

interface PackageJson {
  version: string;
  license?: string;
}

async function readJson<T>(file: string): Promise<T> {
  return JSON.parse(await fs.readFile(file, 'utf8')) as T;
}

/** The checks that need no build: the tree, the version, the CHANGELOG, the templates, the regions. */
export async function preflight(options: ReleaseOptions): Promise<{ version: string }> {
  const { checkout } = options;
  const problems: string[] = [];
  const unclean = uncleanFiles(checkout);
  if (unclean.length) {
    const shown = unclean.slice(0, 10).join(', ') + (unclean.length > 10 ? ', …' : '');
    problems.push(
      `the working tree is not clean (${shown}): a release is built from a commit; commit or stash first`,
    );
  }
  const packageJson = await readJson<PackageJson>(path.join(checkout, 'package.json'));
  let version = '';
  try {
    version = toExtensionVersion(packageJson.version);
  } catch (error) {
    problems.push((error as Error).message);
  }
  const lock = await readJson<{
    version?: string;
    packages?: Record<string, { version?: string }>;
  }>(path.join(checkout, 'package-lock.json'));
  for (const locked of [lock.version, lock.packages?.['']?.version]) {
    if (locked !== packageJson.version) {
      problems.push(
        `package-lock.json says version ${locked} but package.json says ${packageJson.version}: change the version with npm run bump`,
      );
      break;
    }
  }
  if (version) {
    const changelog = await fs.readFile(path.join(checkout, 'CHANGELOG.md'), 'utf8');
    if (!changelogEntry(changelog, version)) {
      problems.push(
        `CHANGELOG.md has no entry for ${version} (a "## ${version}" heading with the changes under it): write it first (npm run bump opens one)`,
      );
    }
    const last = options.testTypeSuffix ? undefined : lastReleaseTag(checkout);
    const order = last ? compareVersions(version, last.version) : 1;
    const sameCommit =
      last && order === 0 && tagCommit(checkout, last.tag) === headCommit(checkout).id;
    if (last && order <= 0 && !sameCommit) {
      problems.push(
        `version ${version} is not higher than the last release tag ${last.tag}: a published version is never rebuilt from other code or overwritten; npm run bump -- hotfix`,
      );
    }
  }
  for (const extension of extensionPackages) {
    const folder = path.join(checkout, 'manifest', extension.type);
    const read = (name: string) => fs.readFile(path.join(folder, name), 'utf8').catch(() => '');
    problems.push(
      ...checkTemplates(
        `manifest/${extension.type}`,
        await read('ExtensionImage.xml'),
        await read('ExtensionImage.json'),
      ),
    );
  }
  if (options.regions !== 'all') {
    if (options.regions.length === 0) problems.push('no region was given');
    for (const region of options.regions) {
      if (!/^[A-Za-z0-9][A-Za-z0-9 ]*$/.test(region)) {
        problems.push(`"${region}" is not a region name (letters, digits and spaces)`);
      }
    }
  }
  if (options.testTypeSuffix !== undefined) {
    if (!/^[A-Za-z0-9]+$/.test(options.testTypeSuffix)) {
      problems.push(`--test-type-suffix ${options.testTypeSuffix} must be letters and digits`);
    }
    if (options.regions === 'all') {
      problems.push('a test type is published to canary regions, never to every region');
    }
    if (options.public) problems.push('a test type stays internal: drop --public');
  }
  if (options.mediaBase !== undefined && !/^https:\/\/\S+[^/]$/.test(options.mediaBase)) {
    problems.push(`--media-base ${options.mediaBase} must be an https URL without a trailing /`);
  }
  if (problems.length) throw new ReleaseRefused(problems);
  return { version };
}

/** The files a release writes for one extension, named after its zip. */
function fileNames(extension: ExpectedExtension) {
  const base = zipName(extension).replace(/\.zip$/, '');
  return {
    zip: `${base}.zip`,
    xml: `${base}.ExtensionImage.xml`,
    json: `${base}.ExtensionImage.json`,
    sbom: `${base}.cdx.json`,
  };
}

function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** The release notes: the CHANGELOG entry, with what the release holds. */
function releaseNotes(
  version: string,
  commit: { id: string; time: Date },
  zips: { name: string; sha256: string }[],
  changes: string,
): string {
  const rows = zips.map((zip) => `| \`${zip.name}\` | \`${zip.sha256}\` |`).join('\n');
  return `# Microsoft Entra ID login extensions ${version}

Built from commit ${commit.id} (${commit.time.toISOString()}).

| zip | SHA-256 |
| --- | --- |
${rows}

## Changes

${changes}
`;
}

/**
 * Releases a checkout: refuses (throwing {@link ReleaseRefused}) before writing anything when a
 * check fails, else writes dist/release/<version>/ and returns what it holds.
 */
export async function release(options: ReleaseOptions): Promise<ReleaseResult> {
  const { checkout, log } = options;
  const { version } = await preflight(options);
  if (options.build) {
    log('building the zips (npm run package)');
    execFileSync(path.join(checkout, 'node_modules', '.bin', 'tsx'), ['scripts/package.ts'], {
      cwd: checkout,
      stdio: ['ignore', 'inherit', 'inherit'],
    });
  }
  const dist = path.join(checkout, 'dist');
  const commit = headCommit(checkout);
  const packageJson = await readJson<PackageJson>(path.join(checkout, 'package.json'));
  const runtime = await bunRuntime(checkout);
  const problems: string[] = [];
  const prepared: {
    built: string;
    extension: ExpectedExtension;
    names: ReturnType<typeof fileNames>;
    xml: string;
    json: string;
    contents: BundleContents;
    targets: string[];
  }[] = [];
  for (const definition of extensionPackages) {
    const built = path.join(
      dist,
      zipName({ namespace: PUBLISHER, type: definition.type, version }),
    );
    const suffix = options.testTypeSuffix ?? '';
    const extension: ExpectedExtension = {
      namespace: PUBLISHER,
      type: `${definition.type}${suffix}`,
      version,
      builtAs: definition.type,
    };
    const names = fileNames(extension);
    const placement: Placement = {
      version,
      regions: options.regions,
      mediaLink: options.mediaBase ? `${options.mediaBase}/${names.zip}` : '',
    };
    const folder = path.join(checkout, 'manifest', definition.type);
    const renamed = renameType(
      {
        xml: fillExtensionImage(
          await fs.readFile(path.join(folder, 'ExtensionImage.xml'), 'utf8'),
          placement,
        ),
        json: fillArmDefinition(
          await fs.readFile(path.join(folder, 'ExtensionImage.json'), 'utf8'),
          placement,
        ),
      },
      definition.type,
      extension.type,
    );
    const { xml, json } = options.public ? makePublic(renamed) : renamed;
    log(`checking ${names.zip} against its definitions`);
    problems.push(
      ...(await checkExtension(
        {
          zip: built,
          xml: { name: `manifest/${definition.type}/ExtensionImage.xml`, text: xml },
          json: { name: `manifest/${definition.type}/ExtensionImage.json`, text: json },
        },
        extension,
        options.limits,
      )),
    );
    const contents = await bundleContents(checkout, definition.entry);
    problems.push(...contents.problems.map((problem) => `${names.zip} SBOM: ${problem}`));
    const targets = definition.executables.map((executable) => executable.target);
    prepared.push({ built, extension, names, xml, json, contents, targets });
  }
  if (problems.length) throw new ReleaseRefused(problems);

  const folderName = options.testTypeSuffix ? `${version}-${options.testTypeSuffix}` : version;
  const directory = path.join(dist, 'release', folderName);
  await fs.rm(directory, { recursive: true, force: true });
  await fs.mkdir(directory, { recursive: true });
  const zips: { name: string; sha256: string }[] = [];
  for (const item of prepared) {
    const data = await fs.readFile(item.built);
    const digest = sha256(data);
    zips.push({ name: item.names.zip, sha256: digest });
    await fs.writeFile(path.join(directory, item.names.zip), data);
    await fs.writeFile(path.join(directory, item.names.xml), item.xml);
    await fs.writeFile(path.join(directory, item.names.json), item.json);
    const sbom = cycloneDx({
      ...item.extension,
      license: packageJson.license ?? 'MIT',
      zipName: item.names.zip,
      zipSha256: digest,
      commit,
      contents: item.contents,
      runtime: { ...runtime, targets: item.targets },
    });
    await fs.writeFile(path.join(directory, item.names.sbom), `${JSON.stringify(sbom, null, 2)}\n`);
  }
  const changelog = await fs.readFile(path.join(checkout, 'CHANGELOG.md'), 'utf8');
  const changes = changelogEntry(changelog, version)?.body ?? '';
  await fs.writeFile(
    path.join(directory, 'RELEASE-NOTES.md'),
    releaseNotes(version, commit, zips, changes),
  );
  const files = (await fs.readdir(directory)).sort();
  const sums: string[] = [];
  for (const file of files) {
    sums.push(`${sha256(await fs.readFile(path.join(directory, file)))}  ${file}\n`);
  }
  await fs.writeFile(path.join(directory, 'SHA256SUMS'), sums.join(''));
  return { version, directory, files: [...files, 'SHA256SUMS'] };
}
