import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, test } from 'node:test';
import { parseOsRelease } from '../../src/linux/checks/os-release.js';
import { supportVerdict } from '../../src/linux/checks/support-matrix.js';

interface CorpusEntry {
  file: string;
  id: string;
  versionId: string | null;
  supported: boolean;
  why: string;
  source: string;
}

const folder = new URL('../fixtures/os-release/', import.meta.url);
const corpus = JSON.parse(await readFile(new URL('corpus.json', folder), 'utf8')) as CorpusEntry[];

describe('real os-release files, each with its expected verdict', () => {
  test('the corpus is large enough to mean something', () => {
    assert.ok(corpus.length >= 40, `${corpus.length} files`);
  });

  for (const entry of corpus) {
    test(`${entry.file}: ${entry.supported ? 'supported' : 'not supported'} (${entry.why})`, async () => {
      const os = parseOsRelease(await readFile(new URL(entry.file, folder), 'utf8'));
      assert.equal(os.id, entry.id.toLowerCase());
      assert.equal(os.versionId ?? null, entry.versionId);
      const verdict = supportVerdict(os, 'x86_64');
      assert.equal(
        verdict.supported,
        entry.supported,
        verdict.supported ? 'supported' : verdict.reason,
      );
      if (!verdict.supported) {
        assert.match(verdict.reason, new RegExp(`ID=${entry.id.toLowerCase()}, VERSION_ID=`));
      }
    });
  }
});
