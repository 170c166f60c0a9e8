/**
 * The release (scripts/release.ts, RELEASING.md) on the real zips of `npm run package`: the
 * publishing definitions validated, every way a definition can disagree with its zip made on
 * purpose in a temporary copy and refused with the right message, the size limits, and
 * `npm run release` in a fresh clone refusing a dirty tree, a missing CHANGELOG entry and a
 * version already released, then writing a release whose SHA256SUMS, SBOMs and definitions are
 * checked. Assumes `npm run package` ran in this checkout.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { checkExtension, type ExpectedExtension, zipName } from '../../scripts/release/checks.js';
import {
  armDefinitionSchema,
  checkTemplates,
  EXTENSION_IMAGE_ORDER,
  EXTENSION_IMAGE_REQUIRED,
  fillArmDefinition,
  fillExtensionImage,
  type Placement,
  parseExtensionImage,
  readExtensionImage,
} from '../../scripts/release/definitions.js';
import { LINUX_ZIP_BUDGET_BYTES, RELEASE_LIMITS } from '../../scripts/release/limits.js';
import { preflight, release } from '../../scripts/release/run.js';
import { entryData, readZip } from '../../scripts/release/zip-read.js';
import { writeZip, type ZipEntry } from '../../scripts/zip.js';
import { extensionVersionOf, PUBLISHER, REPO_ROOT, requireZip } from './agent-driver.js';
import { cloneHead, git, removeCheckout, runScript } from './checkouts.js';

const execFileAsync = promisify(execFile);
const TYPES = ['AADSSHLoginForLinux', 'AADLoginForWindows'] as const;
type ExtensionType = (typeof TYPES)[number];
const CANARY = ['Central US EUAP', 'East US 2 EUAP'];
/** The limits of a release without our own budget, to look at everything else. */
const NO_BUDGET = { ...RELEASE_LIMITS, budgets: {} };

async function templates(type: ExtensionType, root = REPO_ROOT) {
  const folder = path.join(root, 'manifest', type);
  return {
    xml: await fs.readFile(path.join(folder, 'ExtensionImage.xml'), 'utf8'),
    json: await fs.readFile(path.join(folder, 'ExtensionImage.json'), 'utf8'),
  };
}

function placement(version: string, regions: Placement['regions'] = CANARY): Placement {
  return { version, regions, mediaLink: '' };
}

async function filled(type: ExtensionType, version: string) {
  const template = await templates(type);
  return {
    xml: fillExtensionImage(template.xml, placement(version)),
    json: fillArmDefinition(template.json, placement(version)),
  };
}

describe('the publishing definitions in manifest/', () => {
  const version = extensionVersionOf();

  for (const type of TYPES) {
    test(`${type}: the templates hold placeholders for version, media link and regions, never a version`, async () => {
      const { xml, json } = await templates(type);
      assert.deepEqual(checkTemplates(`manifest/${type}`, xml, json), []);
      assert.doesNotMatch(xml, /<Version>\d/);
      assert.doesNotMatch(json, /\/\d+\.\d+\.\d+\.\d+"/);
    });

    test(`${type}: the filled-in JSON passes the schema and says what the zip is for`, async () => {
      const definition = armDefinitionSchema.parse(JSON.parse((await filled(type, version)).json));
      const [extension, versionResource] = definition.resources;
      assert.deepEqual(extension.properties.identifier, { publisher: PUBLISHER, type });
      assert.equal(versionResource.name, `${PUBLISHER}.${type}/${version}`);
      assert.deepEqual(versionResource.properties.regions, CANARY);
      const linux = type === 'AADSSHLoginForLinux';
      assert.equal(versionResource.properties.supportedOS, linux ? 'Linux' : 'Windows');
      assert.deepEqual(
        versionResource.properties.supportedArchitectures,
        linux ? ['x64', 'arm64'] : ['x64'],
      );
      assert.equal(versionResource.properties.isInternalExtension, 'true');
    });

    test(`${type}: the filled-in XML has every required element, in the required order`, async () => {
      const { elements, problems } = parseExtensionImage((await filled(type, version)).xml);
      assert.deepEqual(problems, []);
      const names = elements.map((element) => element.name);
      for (const required of EXTENSION_IMAGE_REQUIRED)
        assert.ok(names.includes(required), required);
      const order: readonly string[] = EXTENSION_IMAGE_ORDER;
      const positions = names.map((name) => order.indexOf(name));
      assert.ok(!positions.includes(-1), `unknown elements in ${names.join(', ')}`);
      assert.deepEqual(
        positions,
        [...positions].sort((a, b) => a - b),
      );
      const read = readExtensionImage((await filled(type, version)).xml);
      assert.deepEqual(read.problems, []);
      assert.equal(read.fields?.namespace, 'Microsoft.Azure.ActiveDirectory');
      assert.equal(read.fields?.version, version);
      assert.deepEqual(read.fields?.regions, CANARY);
    });
  }

  test('every region, and an XML out of order or missing an element, are told apart', async () => {
    const template = await templates('AADSSHLoginForLinux');
    const all = placement(version, 'all');
    assert.match(fillExtensionImage(template.xml, all), /<Regions><\/Regions>/);
    assert.deepEqual(
      JSON.parse(fillArmDefinition(template.json, all)).resources[1].properties.regions,
      ['*'],
    );
    const xml = fillExtensionImage(template.xml, placement(version));
    const swapped = xml
      .replace(/(<Label>[^<]*<\/Label>)/, '')
      .replace('</Description>', '</Description>\n  <Label>moved</Label>');
    assert.ok(
      readExtensionImage(swapped).problems.some((problem) =>
        problem.startsWith('<Label> must come before'),
      ),
      readExtensionImage(swapped).problems.join('\n'),
    );
    const missing = xml.replace(/<SupportedOS>[^<]*<\/SupportedOS>/, '');
    assert.deepEqual(readExtensionImage(missing).problems, ['<SupportedOS> is missing']);
  });
});

/** A copy of a zip with some entries changed, removed or added. */
async function zipCopy(
  source: string,
  target: string,
  change: (entries: ZipEntry[]) => ZipEntry[] | Promise<ZipEntry[]>,
): Promise<void> {
  const archive = await readZip(source);
  const entries = archive.entries.map((entry) => ({
    name: entry.name,
    data: entryData(archive, entry),
    mode: entry.mode,
  }));
  await writeZip(target, await change(entries));
}

describe('a definition that disagrees with its zip (temporary copies of the built zips)', () => {
  const version = extensionVersionOf();
  const expected = (type: ExtensionType): ExpectedExtension => ({
    namespace: PUBLISHER,
    type,
    version,
  });
  let work = '';
  const zips = {} as Record<ExtensionType, string>;
  before(async () => {
    zips.AADSSHLoginForLinux = await requireZip(`${PUBLISHER}.AADSSHLoginForLinux`);
    zips.AADLoginForWindows = await requireZip(`${PUBLISHER}.AADLoginForWindows`);
    work = await fs.mkdtemp(path.join(os.tmpdir(), 'aad-release-copies-'));
  });
  after(async () => {
    if (work) await fs.rm(work, { recursive: true, force: true });
  });

  /** The problems of a release of `type` with the given zip and (changed) definitions. */
  async function problemsOf(
    type: ExtensionType,
    options: { zip?: string; xml?: (xml: string) => string; json?: (json: string) => string } = {},
    limits = NO_BUDGET,
  ): Promise<string[]> {
    const definitions = await filled(type, version);
    return checkExtension(
      {
        zip: options.zip ?? zips[type],
        xml: { name: 'ExtensionImage.xml', text: (options.xml ?? ((x) => x))(definitions.xml) },
        json: { name: 'ExtensionImage.json', text: (options.json ?? ((x) => x))(definitions.json) },
      },
      expected(type),
      limits,
    );
  }

  function assertOneProblem(problems: string[], pattern: RegExp): void {
    assert.equal(problems.length, 1, problems.join('\n'));
    assert.match(problems[0] ?? '', pattern);
  }

  for (const type of TYPES) {
    test(`${type}: the real zip and its definitions agree (the platform's limits included)`, async () => {
      assert.deepEqual(await problemsOf(type), []);
    });
  }

  test('the Linux zip over our 60 MB budget is refused with a message naming the budget', async () => {
    const size = (await fs.stat(zips.AADSSHLoginForLinux)).size;
    const problems = await problemsOf('AADSSHLoginForLinux', {}, RELEASE_LIMITS);
    if (size <= LINUX_ZIP_BUDGET_BYTES) {
      assert.deepEqual(problems, []);
    } else {
      assertOneProblem(
        problems,
        /is \d+\.\d MB, over our size budget of 60\.0 MB for AADSSHLoginForLinux \(LINUX_ZIP_BUDGET_BYTES/,
      );
    }
    const tight = { ...NO_BUDGET, budgets: { AADSSHLoginForLinux: 1_000_000 } };
    assertOneProblem(
      await problemsOf('AADSSHLoginForLinux', {}, tight),
      /over our size budget of 1\.0 MB/,
    );
  });

  test("a zip over the platform's limits (compressed and unpacked) is refused", async () => {
    const small = { ...NO_BUDGET, maxZipBytes: 1024 * 1024, maxUnpackedBytes: 2 * 1024 * 1024 };
    const problems = await problemsOf('AADLoginForWindows', {}, small);
    assert.equal(problems.length, 2, problems.join('\n'));
    assert.match(
      problems[0] ?? '',
      /is \d+\.\d MiB, over the platform's limit of 1\.0 MiB for a zip/,
    );
    assert.match(
      problems[1] ?? '',
      /unpacks to \d+\.\d MiB, over the platform's limit of 2\.0 MiB unpacked/,
    );
  });

  test('a zip whose name is not <publisher>.<type>-<version>.zip is refused', async () => {
    const renamed = path.join(work, `${PUBLISHER}.AADLoginForWindows-9.9.9.9.zip`);
    await fs.copyFile(zips.AADLoginForWindows, renamed);
    assertOneProblem(
      await problemsOf('AADLoginForWindows', { zip: renamed }),
      /the zip's name must be Microsoft\.Azure\.ActiveDirectory\.AADLoginForWindows-/,
    );
  });

  test('a definition naming another type is refused', async () => {
    const problems = await problemsOf('AADSSHLoginForLinux', {
      xml: (xml) =>
        xml.replace('<Type>AADSSHLoginForLinux</Type>', '<Type>AADLoginForLinux</Type>'),
    });
    assert.ok(
      problems.some((p) =>
        /ExtensionImage\.xml: the type is "AADLoginForLinux" but the extension type says "AADSSHLoginForLinux"/.test(
          p,
        ),
      ),
      problems.join('\n'),
    );
    assert.ok(
      problems.some((p) => /disagree on type/.test(p)),
      problems.join('\n'),
    );
  });

  test('a definition naming another publisher namespace is refused', async () => {
    const problems = await problemsOf('AADLoginForWindows', {
      json: (json) =>
        json.replaceAll(
          '"publisher": "Microsoft.Azure.ActiveDirectory"',
          '"publisher": "Microsoft.Azure.Other"',
        ),
    });
    assert.ok(
      problems.some((p) =>
        /ExtensionImage\.json: the namespace is "Microsoft\.Azure\.Other" but the publisher says/.test(
          p,
        ),
      ),
      problems.join('\n'),
    );
  });

  test('a definition with another version is refused', async () => {
    const problems = await problemsOf('AADLoginForWindows', {
      json: (json) => json.replace(`/${version}"`, '/9.9.9.9"'),
      xml: (xml) => xml.replace(`<Version>${version}</Version>`, '<Version>9.9.9.9</Version>'),
    });
    assert.equal(problems.length, 2, problems.join('\n'));
    for (const problem of problems) {
      assert.match(
        problem,
        new RegExp(
          `the version is "9\\.9\\.9\\.9" but package\\.json says "${version.replaceAll('.', '\\.')}"`,
        ),
      );
    }
  });

  test('a HandlerManifest.json command naming a file that is not in the zip is refused', async () => {
    const copy = path.join(work, path.basename(zips.AADSSHLoginForLinux));
    await zipCopy(zips.AADSSHLoginForLinux, copy, (entries) =>
      entries.map((entry) =>
        entry.name === 'HandlerManifest.json'
          ? {
              ...entry,
              data: Buffer.from(
                Buffer.from(entry.data)
                  .toString('utf8')
                  .replace('handler/aadsshlogin-handler.sh enable', 'handler/enable.sh enable'),
              ),
            }
          : entry,
      ),
    );
    assertOneProblem(
      await problemsOf('AADSSHLoginForLinux', { zip: copy }),
      /HandlerManifest\.json: enableCommand names handler\/enable\.sh, which is not in the zip/,
    );
  });

  test('a Linux zip without its aarch64 executable is refused (SupportedOS and architectures)', async () => {
    const copy = path.join(work, path.basename(zips.AADSSHLoginForLinux));
    await zipCopy(zips.AADSSHLoginForLinux, copy, (entries) =>
      entries.filter((entry) => !entry.name.startsWith('bin/linux-arm64/')),
    );
    assertOneProblem(
      await problemsOf('AADSSHLoginForLinux', { zip: copy }),
      /SupportedOS is Linux with supportedArchitectures \[x64, arm64\], but no ELF arm64 executable is under bin\//,
    );
  });

  test('a Linux definition for a zip of Windows executables is refused (PE32+, not ELF)', async () => {
    const copy = path.join(work, path.basename(zips.AADSSHLoginForLinux));
    const windows = await readZip(zips.AADLoginForWindows);
    const exe = windows.entries.find((entry) => entry.name.endsWith('.exe'));
    assert.ok(exe);
    await zipCopy(zips.AADSSHLoginForLinux, copy, (entries) =>
      entries.map((entry) =>
        entry.name === 'bin/linux-x64/aadsshlogin-handler'
          ? { ...entry, data: entryData(windows, exe) }
          : entry,
      ),
    );
    const problems = await problemsOf('AADSSHLoginForLinux', { zip: copy });
    assert.equal(problems.length, 2, problems.join('\n'));
    assert.match(
      problems[0] ?? '',
      /SupportedOS is Linux but bin\/linux-x64\/aadsshlogin-handler is PE32\+ \(x64\), not ELF/,
    );
    assert.match(problems[1] ?? '', /no ELF x64 executable is under bin\//);
  });

  test('a Windows definition for a zip holding an ELF executable is refused', async () => {
    const copy = path.join(work, path.basename(zips.AADLoginForWindows));
    const linux = await readZip(zips.AADSSHLoginForLinux);
    const elf = linux.entries.find((entry) => entry.name === 'bin/linux-x64/aadsshlogin-handler');
    assert.ok(elf);
    await zipCopy(zips.AADLoginForWindows, copy, (entries) => [
      ...entries,
      { name: 'bin/linux-x64/aadsshlogin-handler', data: entryData(linux, elf), mode: 0o755 },
    ]);
    assertOneProblem(
      await problemsOf('AADLoginForWindows', { zip: copy }),
      /SupportedOS is Windows but bin\/linux-x64\/aadsshlogin-handler is ELF64 \(x64\), not PE32\+/,
    );
  });

  test('an xz-compressed executable is judged by what it unpacks to', async () => {
    const copy = path.join(work, path.basename(zips.AADSSHLoginForLinux));
    await zipCopy(zips.AADSSHLoginForLinux, copy, async (entries) => {
      const changed: ZipEntry[] = [];
      for (const entry of entries) {
        if (entry.name !== 'bin/linux-arm64/aadsshlogin-handler') {
          changed.push(entry);
          continue;
        }
        const raw = path.join(work, 'arm64');
        await fs.writeFile(raw, entry.data);
        await execFileAsync('xz', ['-0', '-T1', '-f', raw]);
        changed.push({ ...entry, name: `${entry.name}.xz`, data: await fs.readFile(`${raw}.xz`) });
      }
      return changed;
    });
    assert.deepEqual(await problemsOf('AADSSHLoginForLinux', { zip: copy }), []);
  });
});

describe('npm run release in a fresh clone of HEAD', () => {
  let clone = '';
  let version = '';
  /** A release of the clone's dist/ as built (no new build, no size budget, no log), and `more`. */
  const fromClone = <More extends object>(more: More) => ({
    checkout: clone,
    regions: CANARY,
    limits: NO_BUDGET,
    build: false,
    log: () => {},
    ...more,
  });
  before(async () => {
    clone = await cloneHead('release');
    version = extensionVersionOf(clone);
  });
  after(async () => {
    if (clone) await removeCheckout(clone);
  });
  const releaseFolder = () => path.join(clone, 'dist', 'release');

  async function refusal(...args: string[]): Promise<string> {
    const run = await runScript(clone, 'scripts/release.ts', [
      '--regions',
      CANARY.join(','),
      ...args,
    ]);
    assert.equal(run.exitCode, 1, `expected a refusal:\n${run.stdout}\n${run.stderr}`);
    assert.match(run.stderr, /npm run release refused; nothing was written:/);
    assert.ok(!existsSync(releaseFolder()), 'dist/release/ was written');
    return run.stderr;
  }

  test('refuses a dirty working tree, naming the file', async () => {
    await fs.writeFile(path.join(clone, 'notes.txt'), 'uncommitted\n');
    try {
      assert.match(await refusal(), /the working tree is not clean \(notes\.txt\)/);
    } finally {
      await fs.rm(path.join(clone, 'notes.txt'));
    }
  });

  test('refuses a version whose CHANGELOG entry was opened by npm run bump but not written', async () => {
    const bumped = await runScript(clone, 'scripts/version-bump.ts', ['hotfix']);
    assert.equal(bumped.exitCode, 0, bumped.stderr);
    const next = extensionVersionOf(clone);
    assert.notEqual(next, version);
    assert.equal(next.split('.')[3], String(Number(version.split('.')[3]) + 1));
    await git(clone, 'commit', '--quiet', '-am', 'bump');
    try {
      const message = await refusal();
      assert.match(
        message,
        new RegExp(`CHANGELOG\\.md has no entry for ${next.replaceAll('.', '\\.')}`),
      );
      assert.doesNotMatch(message, /working tree/);
    } finally {
      await git(clone, 'reset', '--quiet', '--hard', 'HEAD~1');
    }
  });

  test('refuses a version not higher than the last release tag', async () => {
    const higher = version.replace(/^\d+/, (major) => String(Number(major) + 1));
    await git(clone, 'tag', `v${higher}`);
    await git(clone, 'tag', 'v0.0.0.1');
    try {
      assert.match(
        await refusal(),
        new RegExp(
          `version ${version.replaceAll('.', '\\.')} is not higher than the last release tag v${higher.replaceAll('.', '\\.')}`,
        ),
      );
      assert.deepEqual(await preflight(fromClone({ testTypeSuffix: 'Test' })), { version });
    } finally {
      await git(clone, 'tag', '-d', `v${higher}`, 'v0.0.0.1');
    }
  });

  test('releases a tagged version again from the tagged commit only (the next rollout step)', async () => {
    const options = fromClone({});
    await git(clone, 'tag', `v${version}`);
    try {
      assert.deepEqual(await preflight(options), { version });
      await git(clone, 'commit', '--quiet', '--allow-empty', '-m', 'later work');
      await assert.rejects(
        preflight(options),
        new RegExp(
          `version ${version.replaceAll('.', '\\.')} is not higher than the last release tag v`,
        ),
      );
    } finally {
      await git(clone, 'tag', '-d', `v${version}`);
      await git(clone, 'reset', '--quiet', '--hard', 'HEAD~1');
    }
  });

  test('refuses a command line that does not name the regions', async () => {
    const run = await runScript(clone, 'scripts/release.ts', []);
    assert.equal(run.exitCode, 1);
    assert.match(run.stderr, /name the regions exactly once/);
  });

  test('builds and checks the zips; refuses over our budget; the release it writes verifies', async () => {
    const run = await runScript(clone, 'scripts/release.ts', ['--regions', CANARY.join(',')]);
    const linuxZip = path.join(
      clone,
      'dist',
      zipName({ namespace: PUBLISHER, type: 'AADSSHLoginForLinux', version }),
    );
    const overBudget = (await fs.stat(linuxZip)).size > LINUX_ZIP_BUDGET_BYTES;
    if (overBudget) {
      assert.equal(run.exitCode, 1, run.stdout);
      const problems = run.stderr.split('\n').filter((line) => line.startsWith('  - '));
      assert.equal(problems.length, 1, run.stderr);
      assert.match(problems[0] ?? '', /over our size budget of 60\.0 MB for AADSSHLoginForLinux/);
      assert.ok(!existsSync(releaseFolder()), 'dist/release/ was written');
      // The rest of the release, shown on the same build with the budget set aside.
      await release(fromClone({}));
    } else {
      assert.equal(run.exitCode, 0, run.stderr);
    }

    const folder = path.join(releaseFolder(), version);
    const files = (await fs.readdir(folder)).sort();
    const bases = TYPES.map((type) => `${PUBLISHER}.${type}-${version}`);
    assert.deepEqual(
      files,
      [
        ...bases.flatMap((base) => [
          `${base}.ExtensionImage.json`,
          `${base}.ExtensionImage.xml`,
          `${base}.cdx.json`,
          `${base}.zip`,
        ]),
        'RELEASE-NOTES.md',
        'SHA256SUMS',
      ].sort(),
    );
    const sums = await execFileAsync('sha256sum', ['-c', 'SHA256SUMS'], { cwd: folder });
    assert.equal(sums.stdout.trim().split('\n').length, files.length - 1);
    assert.doesNotMatch(sums.stdout, /FAILED/);

    for (const type of TYPES) {
      const base = `${PUBLISHER}.${type}-${version}`;
      const built = await fs.readFile(path.join(clone, 'dist', `${base}.zip`));
      assert.ok(
        built.equals(await fs.readFile(path.join(folder, `${base}.zip`))),
        `${base}.zip copied`,
      );
      const problems = await checkExtension(
        {
          zip: path.join(folder, `${base}.zip`),
          xml: {
            name: 'xml',
            text: await fs.readFile(path.join(folder, `${base}.ExtensionImage.xml`), 'utf8'),
          },
          json: {
            name: 'json',
            text: await fs.readFile(path.join(folder, `${base}.ExtensionImage.json`), 'utf8'),
          },
        },
        { namespace: PUBLISHER, type, version },
        NO_BUDGET,
      );
      assert.deepEqual(problems, []);
    }

    const notes = await fs.readFile(path.join(folder, 'RELEASE-NOTES.md'), 'utf8');
    const changelog = await fs.readFile(path.join(clone, 'CHANGELOG.md'), 'utf8');
    const firstLine = changelog
      .split(`## ${version}`)[1]
      ?.split('\n')
      .slice(1)
      .find((line) => line.trim() !== '');
    assert.ok(firstLine && notes.includes(firstLine), 'the notes hold the CHANGELOG entry');
    assert.match(
      notes,
      new RegExp(`Built from commit ${(await git(clone, 'rev-parse', 'HEAD')).trim()}`),
    );
  });

  test('--test-type-suffix writes the same zips and definitions for the internal test types', async () => {
    const result = await release(
      fromClone({
        regions: ['Central US EUAP'],
        mediaBase: 'https://example.blob.core.windows.net/test',
        testTypeSuffix: 'Test',
      }),
    );
    assert.equal(path.basename(result.directory), `${version}-Test`);
    for (const type of TYPES) {
      const base = `${PUBLISHER}.${type}Test-${version}`;
      const zip = await fs.readFile(path.join(result.directory, `${base}.zip`));
      assert.ok(
        zip.equals(
          await fs.readFile(path.join(clone, 'dist', `${PUBLISHER}.${type}-${version}.zip`)),
        ),
      );
      const xml = readExtensionImage(
        await fs.readFile(path.join(result.directory, `${base}.ExtensionImage.xml`), 'utf8'),
      );
      assert.equal(xml.fields?.type, `${type}Test`);
      assert.equal(xml.fields?.isInternal, true);
      assert.equal(xml.fields?.mediaLink, `https://example.blob.core.windows.net/test/${base}.zip`);
      const json = armDefinitionSchema.parse(
        JSON.parse(
          await fs.readFile(path.join(result.directory, `${base}.ExtensionImage.json`), 'utf8'),
        ),
      );
      assert.equal(json.resources[0].properties.identifier.type, `${type}Test`);
      assert.equal(json.resources[1].name, `${PUBLISHER}.${type}Test/${version}`);
    }
    await execFileAsync('sha256sum', ['-c', '--quiet', 'SHA256SUMS'], { cwd: result.directory });
    await assert.rejects(
      release(fromClone({ testTypeSuffix: 'Test', public: true })),
      /a test type stays internal: drop --public/,
    );
    await assert.rejects(
      release(fromClone({ regions: 'all', testTypeSuffix: 'Test' })),
      /a test type is published to canary regions, never to every region/,
    );
  });

  test('--public with every region makes the definitions public and worldwide (the last rollout step)', async () => {
    const result = await release(fromClone({ regions: 'all', public: true }));
    for (const type of TYPES) {
      const base = path.join(result.directory, `${PUBLISHER}.${type}-${version}`);
      const xml = readExtensionImage(await fs.readFile(`${base}.ExtensionImage.xml`, 'utf8'));
      assert.equal(xml.fields?.isInternal, false);
      assert.equal(xml.fields?.regions, 'all');
      const json = armDefinitionSchema.parse(
        JSON.parse(await fs.readFile(`${base}.ExtensionImage.json`, 'utf8')),
      );
      assert.equal(json.resources[1].properties.isInternalExtension, 'false');
      assert.deepEqual(json.resources[1].properties.regions, ['*']);
    }
  });

  test('each SBOM lists the bundled packages at package-lock.json versions, and the Bun runtime', async () => {
    const folder = path.join(releaseFolder(), version);
    const packageJson = JSON.parse(await fs.readFile(path.join(clone, 'package.json'), 'utf8'));
    const lock = JSON.parse(await fs.readFile(path.join(clone, 'package-lock.json'), 'utf8'));
    const bunVersion = lock.packages['node_modules/bun'].version as string;
    const listed = new Map<string, string>();
    const provided = new Set<string>();
    for (const type of TYPES) {
      const sbom = JSON.parse(
        await fs.readFile(path.join(folder, `${PUBLISHER}.${type}-${version}.cdx.json`), 'utf8'),
      );
      assert.equal(sbom.bomFormat, 'CycloneDX');
      assert.equal(sbom.specVersion, '1.5');
      assert.equal(sbom.metadata.component.version, version);
      interface Component {
        type: string;
        group?: string;
        name: string;
        version: string;
        licenses: unknown[];
        properties?: { name: string; value: string }[];
        components?: Component[];
      }
      const components = sbom.components as Component[];
      const runtime = components.find((component) => component.type === 'platform');
      assert.equal(runtime?.name, 'bun');
      assert.equal(runtime?.version, bunVersion);
      const libraries = components.filter((component) => component.type === 'library');
      for (const library of libraries) {
        const full = library.group ? `${library.group}/${library.name}` : library.name;
        assert.ok(library.licenses.length > 0, `${full} has a license`);
        for (const key of library.properties ?? []) {
          assert.equal(
            lock.packages[key.value]?.version,
            library.version,
            `${full} at ${key.value}`,
          );
        }
      }
      for (const library of libraries) {
        listed.set(
          library.group ? `${library.group}/${library.name}` : library.name,
          library.version,
        );
      }
      for (const module of runtime?.components ?? []) provided.add(module.name);
    }
    for (const dependency of Object.keys(packageJson.dependencies)) {
      if (listed.has(dependency)) {
        assert.equal(
          listed.get(dependency),
          lock.packages[`node_modules/${dependency}`].version,
          dependency,
        );
      } else {
        assert.ok(
          provided.has(dependency),
          `${dependency} is neither bundled nor named as provided by the runtime`,
        );
      }
    }
  });
});
