import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, test } from 'node:test';
import { HandlerFailure } from '../../src/failures.js';
import {
  parseHandlerEnvironment,
  readHandlerEnvironment,
} from '../../src/protocol/handler-environment.js';
import { fakeClock, temporaryFolder } from '../fakes.js';

/** Exactly what WALinuxAgent 2.7.3.0 and 2.15 write (agent-protocol.md §2.1). */
const LINUX_AGENT_FILE =
  '[{"name": "Microsoft.Azure.ActiveDirectory.AADSSHLoginForLinux", "version": 1.0, "handlerEnvironment": {"logFolder": "/var/log/azure/Microsoft.Azure.ActiveDirectory.AADSSHLoginForLinux", "configFolder": "/var/lib/waagent/Microsoft.Azure.ActiveDirectory.AADSSHLoginForLinux-1.0.1/config", "statusFolder": "/var/lib/waagent/Microsoft.Azure.ActiveDirectory.AADSSHLoginForLinux-1.0.1/status", "heartbeatFile": "/var/lib/waagent/Microsoft.Azure.ActiveDirectory.AADSSHLoginForLinux-1.0.1/heartbeat.log", "eventsFolder": "/var/log/azure/Microsoft.Azure.ActiveDirectory.AADSSHLoginForLinux/events", "eventsFolder_preview": "/var/log/azure/Microsoft.Azure.ActiveDirectory.AADSSHLoginForLinux/events"}}]';

/** The Windows agent's shape: extra keys, no events folder, a BOM. */
const WINDOWS_AGENT_FILE =
  '\uFEFF[{"version":1.0,"handlerEnvironment":{"logFolder":"C:\\\\WindowsAzure\\\\Logs\\\\Plugins\\\\Microsoft.Azure.ActiveDirectory.AADLoginForWindows\\\\1.0.0.0","configFolder":"C:\\\\Packages\\\\Plugins\\\\Microsoft.Azure.ActiveDirectory.AADLoginForWindows\\\\1.0.0.0\\\\RuntimeSettings","statusFolder":"C:\\\\Packages\\\\Plugins\\\\Microsoft.Azure.ActiveDirectory.AADLoginForWindows\\\\1.0.0.0\\\\Status","heartbeatFile":"C:\\\\Packages\\\\Plugins\\\\Microsoft.Azure.ActiveDirectory.AADLoginForWindows\\\\1.0.0.0\\\\Status\\\\HeartBeat.Json","deploymentid":"d","rolename":"r","instance":"i","hostResolverAddress":"168.63.129.16"}}]';

describe('HandlerEnvironment.json', () => {
  test('the Linux agent file gives its folders, events folder included', () => {
    const parsed = parseHandlerEnvironment(LINUX_AGENT_FILE);
    assert.ok(parsed.ok);
    assert.equal(
      parsed.value.statusFolder,
      '/var/lib/waagent/Microsoft.Azure.ActiveDirectory.AADSSHLoginForLinux-1.0.1/status',
    );
    assert.equal(
      parsed.value.eventsFolder,
      '/var/log/azure/Microsoft.Azure.ActiveDirectory.AADSSHLoginForLinux/events',
    );
  });

  test("the Windows agent's extra keys and byte-order mark are accepted", () => {
    const parsed = parseHandlerEnvironment(WINDOWS_AGENT_FILE);
    assert.ok(parsed.ok);
    assert.equal(parsed.value.eventsFolder, undefined);
    assert.match(parsed.value.configFolder, /RuntimeSettings$/);
  });

  test('a version written as a string is refused, naming the field', () => {
    const parsed = parseHandlerEnvironment(
      LINUX_AGENT_FILE.replace('"version": 1.0', '"version": "1.0"'),
    );
    assert.equal(parsed.ok, false);
    assert.match(!parsed.ok ? parsed.problem : '', /0\.version/);
  });

  test('a missing statusFolder is refused, naming it', () => {
    const parsed = parseHandlerEnvironment(
      '[{"version": 1.0, "handlerEnvironment": {"logFolder": "/l", "configFolder": "/c"}}]',
    );
    assert.equal(parsed.ok, false);
    assert.match(!parsed.ok ? parsed.problem : '', /statusFolder/);
  });

  test('a half-written file is not JSON', () => {
    const parsed = parseHandlerEnvironment(LINUX_AGENT_FILE.slice(0, 80));
    assert.equal(parsed.ok, false);
    assert.match(!parsed.ok ? parsed.problem : '', /not valid JSON/);
  });

  test('a file that appears while the handler waits is read on a later attempt', async () => {
    const { dir, cleanup } = await temporaryFolder();
    try {
      const file = path.join(dir, 'HandlerEnvironment.json');
      await writeFile(file, LINUX_AGENT_FILE.slice(0, 40));
      let sleeps = 0;
      const clock = fakeClock();
      const environment = await readHandlerEnvironment(dir, {
        clock: {
          ...clock,
          sleep: async (ms) => {
            sleeps++;
            if (sleeps === 2) await writeFile(file, LINUX_AGENT_FILE);
            await clock.sleep(ms);
          },
        },
      });
      assert.equal(sleeps, 2);
      assert.match(environment.logFolder, /AADSSHLoginForLinux$/);
    } finally {
      await cleanup();
    }
  });

  test('a file missing after every attempt fails with code 60, naming the file', async () => {
    const { dir, cleanup } = await temporaryFolder();
    try {
      await assert.rejects(
        readHandlerEnvironment(dir, { clock: fakeClock(), attempts: 3 }),
        (error) => {
          assert.ok(error instanceof HandlerFailure);
          assert.equal(error.code, 60);
          assert.match(error.detail, /HandlerEnvironment\.json: it does not exist/);
          return true;
        },
      );
    } finally {
      await cleanup();
    }
  });
});
