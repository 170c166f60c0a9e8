/**
 * Reproducible builds: `npm run package` in two fresh clones of the same commit, in two different
 * folders, gives byte-identical zips, whose entries are sorted and carry the commit's time. Builds
 * the committed HEAD (uncommitted changes are not in a clone).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { readZip } from '../../scripts/release/zip-read.js';
import { dosDateTime } from '../../scripts/zip.js';
import { toExtensionVersion } from '../../src/version.js';
import { LINUX_HANDLER_NAME, WINDOWS_HANDLER_NAME } from './agent-driver.js';
import { cloneHead, removeCheckout, runScript } from './checkouts.js';

const execFileAsync = promisify(execFile);

async function headVersionAndTime(checkout: string): Promise<{ version: string; seconds: number }> {
  const { stdout } = await execFileAsync('git', ['log', '-1', '--format=%ct'], { cwd: checkout });
  const packageJson = JSON.parse(await fs.readFile(path.join(checkout, 'package.json'), 'utf8'));
  return { version: toExtensionVersion(packageJson.version), seconds: Number(stdout.trim()) };
}

describe('two package runs of one commit in two clean checkouts', () => {
  const clones: string[] = [];
  before(async () => {
    for (const label of ['repro-a', 'repro-b']) {
      const clone = await cloneHead(label);
      clones.push(clone);
      const run = await runScript(clone, 'scripts/package.ts');
      assert.equal(run.exitCode, 0, `npm run package failed in ${clone}: ${run.stderr}`);
    }
  });
  after(async () => {
    for (const clone of clones) await removeCheckout(clone);
  });

  for (const handler of [LINUX_HANDLER_NAME, WINDOWS_HANDLER_NAME]) {
    test(`give byte-identical ${handler} zips, entries sorted and dated at the commit`, async () => {
      const [a, b] = clones as [string, string];
      const { version, seconds } = await headVersionAndTime(a);
      const name = `${handler}-${version}.zip`;
      const first = await fs.readFile(path.join(a, 'dist', name));
      const second = await fs.readFile(path.join(b, 'dist', name));
      assert.equal(first.length, second.length, 'same size');
      const at = first.findIndex((byte, index) => byte !== second[index]);
      assert.equal(at, -1, `the zips differ first at byte ${at}`);

      const entries = (await readZip(path.join(a, 'dist', name))).entries;
      const names = entries.map((entry) => entry.name);
      assert.deepEqual(
        names,
        [...names].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y))),
      );
      const stamp = dosDateTime(new Date(seconds * 1000));
      for (const entry of entries) {
        assert.deepEqual({ date: entry.dosDate, time: entry.dosTime }, stamp, entry.name);
        assert.ok(entry.mode === 0o644 || entry.mode === 0o755, `${entry.name} mode ${entry.mode}`);
      }
    });
  }
});
