import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { HandlerFailure } from '../../src/failures.js';
import { parseLinuxSettings } from '../../src/linux/settings.js';

describe('AADSSHLoginForLinux public settings', () => {
  test('none at all gives packages.microsoft.com and no extra keys', () => {
    assert.deepEqual(parseLinuxSettings({}), {
      settings: { repository: { baseUrl: undefined, keyFingerprints: [] } },
      warnings: [],
    });
  });

  test('a mirror and fingerprints are normalised', () => {
    const { settings } = parseLinuxSettings({
      repository: {
        baseUrl: 'https://mirror.contoso.example/pmc/',
        keyFingerprints: ['bc52 8686 b50d 79e3 39d3 721c eb3e 94ad be12 29cf'],
      },
    });
    assert.deepEqual(settings.repository, {
      baseUrl: 'https://mirror.contoso.example/pmc',
      keyFingerprints: ['BC528686B50D79E339D3721CEB3E94ADBE1229CF'],
    });
  });

  test('unknown keys are warnings, not failures', () => {
    const { warnings } = parseLinuxSettings({ extra: 1, repository: { proxy: 'x' } });
    assert.deepEqual(warnings, [
      'Unknown public setting "extra" is ignored.',
      'Unknown public setting "repository.proxy" is ignored.',
    ]);
  });

  for (const [name, repository, key] of [
    ['an ftp URL', { baseUrl: 'ftp://mirror' }, 'repository.baseUrl'],
    [
      'a URL with a newline that would add a line to a repository file',
      { baseUrl: 'https://m\n[evil]' },
      'repository.baseUrl',
    ],
    ['a URL with a quote', { baseUrl: 'https://m"x' }, 'repository.baseUrl'],
    ['a short fingerprint', { keyFingerprints: ['ABCD'] }, 'repository.keyFingerprints.0'],
    ['fingerprints that are not a list', { keyFingerprints: 'BC52' }, 'repository.keyFingerprints'],
  ] as const) {
    test(`${name} fails with 53 naming ${key}`, () => {
      assert.throws(
        () => parseLinuxSettings({ repository }),
        (error) => {
          assert.ok(error instanceof HandlerFailure);
          assert.equal(error.code, 53);
          assert.match(error.detail, new RegExp(`"${key.replaceAll('.', '\\.')}"`));
          return true;
        },
      );
    });
  }
});
