import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, test } from 'node:test';
import { HandlerFailure } from '../../src/failures.js';
import { systemProcesses } from '../../src/io/processes.js';
import { decryptProtectedSettings, secretValues } from '../../src/protocol/protected-settings.js';
import { readSettings } from '../../src/protocol/settings.js';
import { fakeProcesses, temporaryFolder } from '../fakes.js';

async function withSettings(content: string | undefined, check: (config: string) => Promise<void>) {
  const { dir, cleanup } = await temporaryFolder();
  try {
    if (content !== undefined) await writeFile(path.join(dir, '4.settings'), content);
    await check(dir);
  } finally {
    await cleanup();
  }
}

describe('settings file', () => {
  test("the agent's file with public settings and null protected settings", () =>
    withSettings(
      '{"runtimeSettings": [{"handlerSettings": {"publicSettings": {"repository": {"baseUrl": "https://m"}}, "protectedSettings": null, "protectedSettingsCertThumbprint": null}}]}',
      async (config) => {
        const settings = await readSettings(config, 4);
        assert.deepEqual(settings.publicSettings, { repository: { baseUrl: 'https://m' } });
        assert.equal(settings.protectedSettings, undefined);
      },
    ));

  test('a 0-byte file (the agent\'s "no settings") means no settings', () =>
    withSettings('', async (config) => {
      const settings = await readSettings(config, 4);
      assert.deepEqual(settings.publicSettings, {});
      assert.equal(settings.file, path.join(config, '4.settings'));
    }));

  test('a missing file (old disable during an update) means no settings', () =>
    withSettings(undefined, async (config) => {
      const settings = await readSettings(config, 4);
      assert.equal(settings.file, undefined);
    }));

  test('null public settings mean none', () =>
    withSettings(
      '{"runtimeSettings": [{"handlerSettings": {"publicSettings": null, "protectedSettings": null, "protectedSettingsCertThumbprint": null}}]}',
      async (config) => assert.deepEqual((await readSettings(config, 4)).publicSettings, {}),
    ));

  test('a file that is not JSON fails with code 53 naming the file', () =>
    withSettings('{"runtimeSettings": [', async (config) => {
      await assert.rejects(readSettings(config, 4), (error) => {
        assert.ok(error instanceof HandlerFailure);
        assert.equal(error.code, 53);
        assert.match(error.detail, /4\.settings is not valid JSON/);
        return true;
      });
    }));

  test('public settings that are not an object fail with code 53', () =>
    withSettings(
      '{"runtimeSettings": [{"handlerSettings": {"publicSettings": [1]}}]}',
      async (config) => {
        await assert.rejects(
          readSettings(config, 4),
          /runtimeSettings\.0\.handlerSettings\.publicSettings/,
        );
      },
    ));
});

describe('protected settings', () => {
  test('are decrypted with openssl cms, and smime is tried when cms fails', async () => {
    const processes = fakeProcesses((_file, args) =>
      args[0] === 'cms'
        ? { exitCode: 1, stderr: 'cms: unknown command' }
        : { stdout: '{"secret":"s3cr3t"}' },
    );
    const { dir, cleanup } = await temporaryFolder();
    try {
      const thumbprint = 'A'.repeat(40);
      await writeFile(path.join(dir, `${thumbprint}.crt`), 'c');
      await writeFile(path.join(dir, `${thumbprint}.prv`), 'k');
      const value = await decryptProtectedSettings(
        { data: Buffer.from('der').toString('base64'), thumbprint: thumbprint.toLowerCase() },
        { certificateFolder: dir, processes },
      );
      assert.deepEqual(value, { secret: 's3cr3t' });
      assert.deepEqual(
        processes.calls.map((call) => call.args.slice(0, 4)),
        [
          ['cms', '-decrypt', '-inform', 'DER'],
          ['smime', '-decrypt', '-inform', 'DER'],
        ],
      );
    } finally {
      await cleanup();
    }
  });

  test('a missing certificate fails with code 61 naming the file, without running openssl', async () => {
    const processes = fakeProcesses(() => ({}));
    await assert.rejects(
      decryptProtectedSettings(
        { data: 'AAAA', thumbprint: 'B'.repeat(40) },
        { certificateFolder: '/nonexistent', processes },
      ),
      (error) => {
        assert.ok(error instanceof HandlerFailure);
        assert.equal(error.code, 61);
        assert.match(error.detail, /\/nonexistent\/B{40}\.crt does not exist/);
        return true;
      },
    );
    assert.equal(processes.calls.length, 0);
  });

  test('a thumbprint that could name another path is refused', async () => {
    await assert.rejects(
      decryptProtectedSettings(
        { data: 'AAAA', thumbprint: '../../etc/passwd' },
        { certificateFolder: '/x', processes: fakeProcesses(() => ({})) },
      ),
      /40-digit hexadecimal/,
    );
  });

  test('a value encrypted by the real openssl for a test certificate decrypts', async () => {
    const { dir, cleanup } = await temporaryFolder();
    try {
      const certificate = path.join(dir, 'cert.pem');
      const key = path.join(dir, 'key.pem');
      execFileSync(
        'openssl',
        [
          'req',
          '-x509',
          '-newkey',
          'rsa:2048',
          '-nodes',
          '-keyout',
          key,
          '-out',
          certificate,
          '-days',
          '1',
          '-subj',
          '/CN=test',
        ],
        { stdio: 'ignore' },
      );
      const fingerprint = execFileSync(
        'openssl',
        ['x509', '-in', certificate, '-noout', '-fingerprint', '-sha1'],
        { encoding: 'utf8' },
      );
      const thumbprint = fingerprint.split('=')[1]?.trim().replaceAll(':', '') ?? '';
      await writeFile(path.join(dir, `${thumbprint}.crt`), await readFile(certificate));
      await writeFile(path.join(dir, `${thumbprint}.prv`), await readFile(key));
      const der = execFileSync(
        'openssl',
        ['smime', '-encrypt', '-binary', '-aes256', '-outform', 'DER', certificate],
        {
          input: '{"password":"correct horse battery"}',
        },
      );
      const value = await decryptProtectedSettings(
        { data: der.toString('base64'), thumbprint },
        { certificateFolder: dir, processes: systemProcesses },
      );
      assert.deepEqual(value, { password: 'correct horse battery' });
      assert.deepEqual(secretValues(value), ['correct horse battery']);
    } finally {
      await cleanup();
    }
  });
});
