import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, test } from 'node:test';
import { failureKinds, HandlerFailure, toFailure } from '../../src/failures.js';
import { operations, VERBS } from '../../src/lifecycle/operations.js';
import { toExtensionVersion } from '../../src/version.js';

describe('failure catalogue', () => {
  test("codes are unique, below 256, never the shell's 126/127, and keep the documented ones", () => {
    const codes: number[] = Object.values(failureKinds).map((kind) => kind.code);
    assert.equal(new Set(codes).size, codes.length);
    for (const code of codes) assert.ok(code > 0 && code < 256 && code !== 126 && code !== 127);
    assert.equal(failureKinds.noSystemAssignedIdentity.code, 22);
    assert.equal(failureKinds.legacyExtensionInstalled.code, 23);
    assert.equal(failureKinds.unsupportedOperatingSystem.code, 51);
  });

  test('the README exit-code table is this catalogue', async () => {
    const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8');
    for (const [name, kind] of Object.entries(failureKinds)) {
      assert.match(
        readme,
        new RegExp(`^\\| ${kind.code} \\| \`${name}\` \\|`, 'm'),
        `README row for ${name}`,
      );
    }
  });

  test('an unknown error keeps its message under the generic code', () => {
    const failure = toFailure(new RangeError('boom'));
    assert.equal(failure.code, 70);
    assert.match(failure.operatorMessage, /failed unexpectedly\. boom/);
    const known = new HandlerFailure('handlerBusy', 'x');
    assert.equal(toFailure(known), known);
  });
});

describe('operations table', () => {
  test('every command stops before the agent would kill it', () => {
    for (const verb of VERBS) {
      const operation = operations[verb];
      assert.ok(operation.deadlineSeconds < operation.agentTimeoutSeconds - 10, verb);
    }
    assert.equal(operations.enable.agentTimeoutSeconds, 300);
    assert.equal(operations.uninstall.agentTimeoutSeconds, 300);
    assert.equal(operations.install.agentTimeoutSeconds, 900);
  });
});

describe('version', () => {
  test('the npm version maps to the four-part extension version', () => {
    assert.equal(toExtensionVersion('1.0.0'), '1.0.0.0');
    assert.equal(toExtensionVersion('1.0.2385+1'), '1.0.2385.1');
    assert.throws(() => toExtensionVersion('1.0.0-beta'), /MAJOR\.MINOR\.BUILD/);
    assert.throws(() => toExtensionVersion('1.0.0+abc'), /revision/);
  });

  test('CHANGELOG.md has an entry for the current version', async () => {
    const packageJson = JSON.parse(
      await readFile(new URL('../../package.json', import.meta.url), 'utf8'),
    );
    const changelog = await readFile(new URL('../../CHANGELOG.md', import.meta.url), 'utf8');
    const version = toExtensionVersion(packageJson.version).replaceAll('.', '\\.');
    assert.match(changelog, new RegExp(`^## ${version}\\b`, 'm'));
  });
});
