/**
 * Masking a text cell by content: the detectors' matches replaced by their masked form.
 */
import { detectorBits, scanText, type DetectorMatch } from './detectors.ts';
import { partialMask, placeholderFor, pseudonym } from './strategies.ts';
import { MaskStrategy, type Detector } from './vocabulary.ts';

export interface MaskTextResult {
  /** The masked text; the input itself (same reference) when nothing matched; null for `null`. */
  readonly text: string | null;
  /** What was found (offsets into the input), for the audit summary; empty when nothing matched. */
  readonly matches: readonly DetectorMatch[];
}

const NO_MATCHES: readonly DetectorMatch[] = Object.freeze([]);

/**
 * Every match of `detectors` in `text` replaced: `redact` by the detector's placeholder (`[EMAIL]`),
 * `partial` and `hash` by the masked form of the matched value, `null` makes the whole cell NULL when
 * anything matched. Nothing matched: `text` itself is returned, so callers can skip re-encoding it.
 */
export function maskText(text: string, detectors: readonly Detector[], strategy: MaskStrategy, hashKey: Uint8Array): MaskTextResult {
  return maskTextWith(text, detectorBits(detectors), strategy, hashKey);
}

/** maskText with the detectors as a bit set (`detectorBits`), computed once per policy. */
export function maskTextWith(text: string, enabled: number, strategy: MaskStrategy, hashKey: Uint8Array): MaskTextResult {
  const matches = scanText(text, enabled);
  if (matches === undefined) return { text, matches: NO_MATCHES };
  if (strategy === MaskStrategy.null) return { text: null, matches };
  let out = '';
  let pos = 0;
  for (const m of matches) {
    out += text.slice(pos, m.start) + replacement(text.slice(m.start, m.end), m.detector, strategy, hashKey);
    pos = m.end;
  }
  return { text: out + text.slice(pos), matches };
}

function replacement(value: string, detector: Detector, strategy: Exclude<MaskStrategy, 'null'>, hashKey: Uint8Array): string {
  switch (strategy) {
    case MaskStrategy.redact:
      return placeholderFor(detector);
    case MaskStrategy.partial:
      return partialMask(value);
    case MaskStrategy.hash:
      return pseudonym(value, hashKey);
    default:
      // Unreachable for a validated policy; refusing beats returning the value.
      throw new Error(`unknown masking strategy: ${String(strategy satisfies never)}`);
  }
}
