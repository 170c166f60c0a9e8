import assert from 'node:assert/strict';
import { mkdir, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, test } from 'node:test';
import { resolveSequenceNumber } from '../../src/protocol/sequence.js';
import { temporaryFolder } from '../fakes.js';

describe('sequence number', () => {
  test('ConfigSequenceNumber from the agent wins', async () => {
    const sequence = await resolveSequenceNumber({ ConfigSequenceNumber: '7' }, '/nonexistent');
    assert.deepEqual(sequence, { value: 7, source: 'ConfigSequenceNumber' });
  });

  test('without it, the most recently modified settings file wins, not the largest number', async () => {
    const { dir, cleanup } = await temporaryFolder();
    try {
      const config = path.join(dir, 'config');
      await mkdir(config);
      for (const name of [
        '0.settings',
        '3.settings',
        '12.settings',
        'HandlerState',
        'x.settings',
      ]) {
        await writeFile(path.join(config, name), '');
      }
      await utimes(path.join(config, '12.settings'), 1000, 1000);
      await utimes(path.join(config, '0.settings'), 2000, 2000);
      await utimes(path.join(config, '3.settings'), 3000, 3000);
      const sequence = await resolveSequenceNumber({ ConfigSequenceNumber: 'garbage' }, config);
      assert.deepEqual(sequence, { value: 3, source: 'newest settings file' });
    } finally {
      await cleanup();
    }
  });

  test('no variable and no settings file means 0', async () => {
    assert.deepEqual(await resolveSequenceNumber({}, '/nonexistent'), {
      value: 0,
      source: 'default',
    });
  });
});
