export declare const ESM_BUNDLE_BANNER_LINES: readonly string[];
export declare const ESM_BUNDLE_DEFINE: Readonly<Record<'__dirname' | '__filename', string>>;
