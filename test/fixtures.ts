import { readFile } from 'node:fs/promises';

/** A real `/etc/os-release` from the corpus in test/fixtures/os-release, byte for byte. */
export function osReleaseFixture(name: string): Promise<string> {
  return readFile(new URL(`./fixtures/os-release/${name}.os-release`, import.meta.url), 'utf8');
}
