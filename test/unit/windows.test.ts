import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseDsregStatus, signed32 } from '../../src/windows/join.js';
import { parseRegQuery } from '../../src/windows/platform.js';
import { windowsSupportVerdict } from '../../src/windows/support.js';

describe('Windows answers read without Windows', () => {
  test('reg.exe query output: REG_SZ as text, REG_DWORD as a decimal number', () => {
    const out = [
      '',
      'HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion',
      '    CurrentBuildNumber    REG_SZ    20348',
      '    InstallationType    REG_SZ    Server Core',
      '    UBR    REG_DWORD    0x9a5',
      '',
    ].join('\r\n');
    assert.equal(parseRegQuery(out, 'CurrentBuildNumber'), '20348');
    assert.equal(parseRegQuery(out, 'installationtype'), 'Server Core');
    assert.equal(parseRegQuery(out, 'UBR'), '2469');
    assert.equal(parseRegQuery(out, 'ProductName'), undefined);
  });

  test('dsregcmd /status fields, first occurrence wins', () => {
    const fields = parseDsregStatus(
      '| Device State |\r\n\r\n             AzureAdJoined : YES\r\n              DomainJoined : NO\r\n                  TenantId : abc\r\n',
    );
    assert.equal(fields.get('AzureAdJoined'), 'YES');
    assert.equal(fields.get('DomainJoined'), 'NO');
    assert.equal(fields.get('TenantId'), 'abc');
  });

  test('exit codes as Node reports them on Windows are read as signed 32-bit HRESULTs', () => {
    assert.equal(signed32(0x801c0042), -2145648574);
    assert.equal(signed32(-2145648574), -2145648574);
    assert.equal(signed32(0), 0);
  });

  test('support: client and server from build 17763, never Server Core', () => {
    const verdict = (build: number, productType: string, installationType: string) =>
      windowsSupportVerdict({ build, productType, installationType, productName: 'x' }).supported;
    assert.equal(verdict(17763, 'WinNT', 'Client'), true);
    assert.equal(verdict(17134, 'WinNT', 'Client'), false);
    assert.equal(verdict(26100, 'ServerNT', 'Server'), true);
    assert.equal(verdict(26100, 'LanmanNT', 'Server'), true);
    assert.equal(verdict(26100, 'ServerNT', 'Server Core'), false);
    assert.equal(verdict(Number.NaN, 'WinNT', 'Client'), false);
  });
});
