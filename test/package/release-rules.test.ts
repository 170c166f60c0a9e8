/**
 * The rules behind `npm run bump` and `npm run release`, one by one, without a build: how a
 * version is raised, where its CHANGELOG entry opens and ends, which tags count as releases, how
 * an executable's first bytes are read, and how a package path maps to package-lock.json.
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { executableKind } from '../../scripts/release/executables.js';
import { regionsFrom } from '../../scripts/release/regions.js';
import { changelogEntry, RELEASE_TAG } from '../../scripts/release/repository.js';
import { lockKeyOf, npmPurl } from '../../scripts/release/sbom.js';
import { bumpNpmVersion, openChangelogEntry } from '../../scripts/version-bump.js';
import { dosDateTime } from '../../scripts/zip.js';
import { compareVersions } from '../../src/linux/checks/support-matrix.js';
import { toExtensionVersion } from '../../src/version.js';

describe('npm run bump', () => {
  test('a hotfix raises the fourth part, which is the npm build metadata', () => {
    assert.equal(bumpNpmVersion('1.0.0', 'hotfix'), '1.0.0+1');
    assert.equal(bumpNpmVersion('1.0.2385+1', 'hotfix'), '1.0.2385+2');
    assert.equal(toExtensionVersion(bumpNpmVersion('1.0.2385+1', 'hotfix')), '1.0.2385.2');
  });

  test('build, minor and major raise their part and start the later ones again at 0', () => {
    assert.equal(bumpNpmVersion('1.0.2385+1', 'build'), '1.0.2386');
    assert.equal(bumpNpmVersion('1.0.2385+1', 'minor'), '1.1.0');
    assert.equal(bumpNpmVersion('1.4.2385+1', 'major'), '2.0.0');
  });

  test('opens an empty entry above the newest one, and never a second entry for a version', () => {
    const changelog = '# Changelog\n\nIntro.\n\n## 1.0.0.0\n\n- first\n';
    const opened = openChangelogEntry(changelog, '1.0.0.1');
    assert.equal(
      opened,
      '# Changelog\n\nIntro.\n\n## 1.0.0.1 (unreleased)\n\n## 1.0.0.0\n\n- first\n',
    );
    assert.equal(changelogEntry(opened, '1.0.0.1'), undefined, 'an empty entry is no entry');
    assert.throws(
      () => openChangelogEntry(opened, '1.0.0.1'),
      /already has an entry for 1\.0\.0\.1/,
    );
  });
});

describe('what the release reads from the repository', () => {
  test("a version's CHANGELOG entry runs from its heading to the next one, and 1.0.0.1 is not 1.0.0.10", () => {
    const changelog =
      '## 1.0.0.10\n\n- ten\n\n## 1.0.0.1 (2026-12-03)\n\n- one\n- more\n\n## 1.0.0.0\n\n- zero\n';
    assert.deepEqual(changelogEntry(changelog, '1.0.0.1'), {
      heading: '## 1.0.0.1 (2026-12-03)',
      body: '- one\n- more',
    });
    assert.equal(changelogEntry(changelog, '1.0.0.0')?.body, '- zero');
    assert.equal(changelogEntry(changelog, '1.0.0.2'), undefined);
  });

  test('regions come from a list, a file with comments, or every region, named exactly once', async () => {
    assert.deepEqual(await regionsFrom({ regions: 'Central US EUAP, East US 2 EUAP;' }, ''), [
      'Central US EUAP',
      'East US 2 EUAP',
    ]);
    const folder = await fs.mkdtemp(path.join(os.tmpdir(), 'aad-regions-'));
    try {
      const file = path.join(folder, 'step-2.txt');
      await fs.writeFile(file, '# step 2\nCentral US EUAP\n\nWest Central US  # next\n');
      assert.deepEqual(await regionsFrom({ 'regions-file': file }, ''), [
        'Central US EUAP',
        'West Central US',
      ]);
      await assert.rejects(
        regionsFrom({ 'regions-file': path.join(folder, 'none.txt') }, ''),
        /cannot read the regions file .*none\.txt/,
      );
    } finally {
      await fs.rm(folder, { recursive: true, force: true });
    }
    assert.equal(await regionsFrom({ 'all-regions': true }, ''), 'all');
    await assert.rejects(
      regionsFrom({ regions: 'A', 'all-regions': true }, 'usage'),
      /name the regions exactly once\. usage/,
    );
    await assert.rejects(regionsFrom({}, 'usage'), /name the regions exactly once/);
  });

  test('release tags are v and four numbers, compared as numbers', () => {
    assert.equal(RELEASE_TAG.exec('v1.0.2385.1')?.[1], '1.0.2385.1');
    assert.equal(RELEASE_TAG.exec('v1.0.0'), null);
    assert.equal(RELEASE_TAG.exec('1.0.0.0'), null);
    assert.ok(compareVersions('1.0.0.10', '1.0.0.9') > 0);
    assert.ok(compareVersions('1.1.0.0', '1.0.9999.9') > 0);
    assert.equal(compareVersions('1.0.0.0', '1.0.0.0'), 0);
  });
});

describe('what the release reads from a zip', () => {
  function elf(machine: number): Buffer {
    const head = Buffer.alloc(64);
    head.writeUInt32BE(0x7f454c46, 0);
    head.writeUInt8(2, 4);
    head.writeUInt8(1, 5);
    head.writeUInt16LE(machine, 18);
    return head;
  }

  function pe(machine: number, magic: number): Buffer {
    const head = Buffer.alloc(512);
    head.write('MZ', 0, 'latin1');
    head.writeUInt32LE(0x80, 0x3c);
    head.writeUInt32BE(0x50450000, 0x80);
    head.writeUInt16LE(machine, 0x84);
    head.writeUInt16LE(magic, 0x80 + 24);
    return head;
  }

  test('ELF and PE headers tell the format and the machine; anything else is no executable', () => {
    assert.deepEqual(executableKind(elf(62)), { format: 'ELF64', architecture: 'x64' });
    assert.deepEqual(executableKind(elf(183)), { format: 'ELF64', architecture: 'arm64' });
    assert.deepEqual(executableKind(elf(40)), { format: 'ELF64', architecture: 'machine 0x28' });
    assert.deepEqual(executableKind(pe(0x8664, 0x20b)), { format: 'PE32+', architecture: 'x64' });
    assert.deepEqual(executableKind(pe(0x14c, 0x10b)), {
      format: 'PE32',
      architecture: 'machine 0x14c',
    });
    assert.equal(executableKind(Buffer.from('#!/bin/sh\necho hello\n')), undefined);
  });

  test('zip times are the commit time in UTC, at 2-second resolution, never before 1980', () => {
    assert.deepEqual(dosDateTime(new Date('2026-12-03T09:20:35Z')), {
      date: ((2026 - 1980) << 9) | (12 << 5) | 3,
      time: (9 << 11) | (20 << 5) | 17,
    });
    assert.deepEqual(dosDateTime(new Date(0)), { date: (1 << 5) | 1, time: 0 });
  });

  test('a bundled file maps to its package-lock.json key, nested and scoped packages included', () => {
    assert.equal(lockKeyOf('zod/index.js'), 'node_modules/zod');
    assert.equal(lockKeyOf('@colors/colors/lib/index.js'), 'node_modules/@colors/colors');
    assert.equal(
      lockKeyOf('winston/node_modules/is-stream/index.js'),
      'node_modules/winston/node_modules/is-stream',
    );
    assert.equal(npmPurl('@colors/colors', '1.6.1'), 'pkg:npm/%40colors/colors@1.6.1');
  });
});
