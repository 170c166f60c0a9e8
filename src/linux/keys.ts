/**
 * OpenPGP public keys as the repositories publish them (`keys/microsoft.asc`), read without gpg
 * (which a VM may not have): ASCII armor to binary packets (RFC 4880 §6), transferable public keys
 * split at each primary-key packet (§11.1), and the v4 fingerprint of each (§12.2: SHA-1 over
 * 0x99, the two-byte length and the key packet's body). Only keys whose fingerprint is trusted are
 * kept; their binary packets are exactly what `gpg --dearmor` writes, so they serve as an apt
 * keyring as they are.
 */

const PUBLIC_KEY = 6;

export interface PublicKey {
  /** 40 upper-case hexadecimal digits. */
  fingerprint: string;
  /** The key's packets: the primary key, its user ids, signatures and subkeys. */
  packets: Buffer;
}

/**
 * The binary packets of the armored blocks in `text`, in order (a key file may hold several, as
 * `gpg --import` accepts); `undefined` if the text holds no ASCII armor.
 */
export function dearmor(text: string): Buffer | undefined {
  const blocks = text.matchAll(
    /-----BEGIN PGP PUBLIC KEY BLOCK-----\r?\n([\s\S]*?)-----END PGP PUBLIC KEY BLOCK-----/g,
  );
  const parts: Buffer[] = [];
  for (const match of blocks) {
    if (!match[1]) continue;
    const lines = match[1].split(/\r?\n/);
    // Armor headers ("Comment: …") end at the first blank line, when there are any.
    const blank = lines.findIndex((line) => line.trim() === '');
    const hasHeaders = lines
      .slice(0, Math.max(blank, 0))
      .every((line) => /^[A-Za-z-]+: /.test(line));
    const body = (blank > 0 && hasHeaders ? lines.slice(blank + 1) : lines)
      .map((line) => line.trim())
      .filter((line) => line !== '' && !line.startsWith('='));
    parts.push(Buffer.from(body.join(''), 'base64'));
  }
  const bytes = Buffer.concat(parts);
  return bytes.length > 0 ? bytes : undefined;
}

interface Packet {
  tag: number;
  start: number;
  bodyStart: number;
  end: number;
}

function* packets(data: Buffer): Generator<Packet> {
  let offset = 0;
  while (offset < data.length) {
    const start = offset;
    const header = data[offset++] ?? 0;
    if ((header & 0x80) === 0) throw new Error('not an OpenPGP packet');
    let tag: number;
    let length: number;
    if (header & 0x40) {
      tag = header & 0x3f;
      const first = data[offset++] ?? 0;
      if (first < 192) length = first;
      else if (first < 224) length = ((first - 192) << 8) + (data[offset++] ?? 0) + 192;
      else if (first === 255) {
        length = data.readUInt32BE(offset);
        offset += 4;
      } else throw new Error('partial-length packets do not occur in public keys');
    } else {
      tag = (header >> 2) & 0x0f;
      const type = header & 0x03;
      if (type === 0) length = data[offset++] ?? 0;
      else if (type === 1) {
        length = data.readUInt16BE(offset);
        offset += 2;
      } else if (type === 2) {
        length = data.readUInt32BE(offset);
        offset += 4;
      } else throw new Error('indeterminate-length packets do not occur in public keys');
    }
    const end = offset + length;
    if (end > data.length) throw new Error('truncated OpenPGP packet');
    yield { tag, start, bodyStart: offset, end };
    offset = end;
  }
}

/** Splits binary key material into its public keys, each with its fingerprint. */
export function publicKeys(data: Buffer): PublicKey[] {
  const keys: { fingerprint: string; start: number; end: number }[] = [];
  for (const packet of packets(data)) {
    if (packet.tag === PUBLIC_KEY) {
      const body = data.subarray(packet.bodyStart, packet.end);
      if (body[0] !== 4)
        throw new Error(`OpenPGP key version ${body[0]} is not supported (only v4)`);
      const prefix = Buffer.from([0x99, (body.length >> 8) & 0xff, body.length & 0xff]);
      const fingerprint = process
        .getBuiltinModule('node:crypto')
        .createHash('sha1')
        .update(prefix)
        .update(body)
        .digest('hex')
        .toUpperCase();
      keys.push({ fingerprint, start: packet.start, end: packet.end });
    } else {
      const last = keys.at(-1);
      if (last) last.end = packet.end;
    }
  }
  return keys.map((key) => ({
    fingerprint: key.fingerprint,
    packets: data.subarray(key.start, key.end),
  }));
}

/**
 * The keys of an armored file that are trusted, and the fingerprints of those that are not (for
 * the log). A file that is not a key block fails with a message naming what it is.
 */
export function trustedKeys(
  armored: string,
  trustedFingerprints: readonly string[],
): { trusted: PublicKey[]; refused: string[] } {
  const binary = dearmor(armored);
  if (!binary) throw new Error('not an ASCII-armored OpenPGP public key block');
  const trusted = new Set(trustedFingerprints.map((fingerprint) => fingerprint.toUpperCase()));
  const keys = publicKeys(binary);
  return {
    trusted: keys.filter((key) => trusted.has(key.fingerprint)),
    refused: keys.filter((key) => !trusted.has(key.fingerprint)).map((key) => key.fingerprint),
  };
}

/** OpenPGP's CRC-24 (RFC 4880 §6.1), for the armor's checksum line. */
function crc24(data: Uint8Array): number {
  let crc = 0xb704ce;
  for (const byte of data) {
    crc ^= byte << 16;
    for (let bit = 0; bit < 8; bit++) {
      crc <<= 1;
      if (crc & 0x1000000) crc ^= 0x1864cfb;
    }
  }
  return crc & 0xffffff;
}

/** Binary key packets as one ASCII-armored public key block, as rpm and dnf read them. */
export function armor(packets: Uint8Array): string {
  const body = Buffer.from(packets).toString('base64');
  const lines = body.match(/.{1,64}/g) ?? [];
  const checksum = Buffer.from([
    (crc24(packets) >> 16) & 0xff,
    (crc24(packets) >> 8) & 0xff,
    crc24(packets) & 0xff,
  ]).toString('base64');
  return [
    '-----BEGIN PGP PUBLIC KEY BLOCK-----',
    '',
    ...lines,
    `=${checksum}`,
    '-----END PGP PUBLIC KEY BLOCK-----',
    '',
  ].join('\n');
}
