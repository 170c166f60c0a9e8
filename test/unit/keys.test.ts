import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { armor, dearmor, publicKeys, trustedKeys } from '../../src/linux/keys.js';
import { temporaryFolder } from '../fakes.js';

/** Two throwaway keys made by the real gpg, in a keyring of their own. */
let home: { dir: string; cleanup(): Promise<void> };
const gpg = (args: string[], input?: string) =>
  execFileSync('gpg', ['--homedir', home.dir, '--batch', '--quiet', ...args], {
    ...(input === undefined ? {} : { input }),
    stdio: ['pipe', 'pipe', 'ignore'],
  });
let armoredBoth = '';
let fingerprints: string[] = [];

before(async () => {
  home = await temporaryFolder();
  for (const name of ['Signer One <one@example.test>', 'Signer Two <two@example.test>']) {
    gpg(['--passphrase', '', '--quick-gen-key', name, 'ed25519', 'sign', '1d']);
  }
  armoredBoth = gpg(['--armor', '--export']).toString('utf8');
  fingerprints = gpg(['--with-colons', '--list-keys'])
    .toString('utf8')
    .split('\n')
    .filter((line) => line.startsWith('fpr:'))
    .map((line) => line.split(':')[9] ?? '')
    .filter((fingerprint, index, all) => all.indexOf(fingerprint) === index);
});
after(async () => home.cleanup());

describe('OpenPGP keys without gpg', () => {
  test('fingerprints are the ones gpg computes', () => {
    const keys = publicKeys(dearmor(armoredBoth) ?? Buffer.alloc(0));
    assert.equal(keys.length, 2);
    for (const key of keys) assert.ok(fingerprints.includes(key.fingerprint), key.fingerprint);
  });

  test('armor() writes a block with the checksum gpg computes, which reads back to the same bytes', () => {
    const binary = dearmor(armoredBoth) ?? Buffer.alloc(0);
    const armored = armor(binary);
    assert.deepEqual(dearmor(armored), binary);
    assert.deepEqual(gpg(['--dearmor'], armored), binary);
    const checksum = armoredBoth.split('\n').find((line) => /^=[A-Za-z0-9+/]{4}$/.test(line));
    if (checksum) assert.ok(armored.includes(`\n${checksum}\n`), 'same CRC-24 as gpg');
  });

  test('dearmored bytes are what gpg --dearmor writes', () => {
    assert.deepEqual(dearmor(armoredBoth), gpg(['--dearmor'], armoredBoth));
  });

  test('only trusted keys are kept, and gpgv accepts a signature with that keyring alone', async () => {
    const keys = publicKeys(dearmor(armoredBoth) ?? Buffer.alloc(0));
    const [first, second] = keys;
    assert.ok(first && second);
    const { trusted, refused } = trustedKeys(armoredBoth, [first.fingerprint.toLowerCase()]);
    assert.deepEqual(
      trusted.map((key) => key.fingerprint),
      [first.fingerprint],
    );
    assert.deepEqual(refused, [second.fingerprint]);

    const work = await temporaryFolder();
    try {
      const file = path.join(work.dir, 'Release');
      await writeFile(file, 'Origin: test\n');
      const signWith = (fingerprint: string) => {
        gpg([
          '--yes',
          '--local-user',
          fingerprint,
          '--output',
          `${file}.${fingerprint}.gpg`,
          '--detach-sign',
          file,
        ]);
        return `${file}.${fingerprint}.gpg`;
      };
      const keyring = path.join(work.dir, 'microsoft-prod.gpg');
      await writeFile(keyring, trusted[0]?.packets ?? Buffer.alloc(0));
      const verify = (signature: string) => {
        try {
          execFileSync('gpgv', ['--keyring', keyring, signature, file], { stdio: 'ignore' });
          return true;
        } catch {
          return false;
        }
      };
      assert.equal(verify(signWith(first.fingerprint)), true, 'signed by the trusted key');
      assert.equal(verify(signWith(second.fingerprint)), false, 'signed by the refused key');
    } finally {
      await work.cleanup();
    }
  });

  test('text that is not a key block is refused', () => {
    assert.throws(
      () => trustedKeys('<html>403 Forbidden</html>', []),
      /not an ASCII-armored OpenPGP public key block/,
    );
  });
});
