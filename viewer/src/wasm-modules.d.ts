// The emscripten factories of the @cornerstonejs codec packages (CommonJS, untyped).
declare module "@cornerstonejs/codec-charls/decodewasmjs" {
  const factory: (options?: Record<string, unknown>) => Promise<any>;
  export default factory;
}
declare module "@cornerstonejs/codec-libjpeg-turbo-8bit/decodewasmjs" {
  const factory: (options?: Record<string, unknown>) => Promise<any>;
  export default factory;
}
declare module "@cornerstonejs/codec-openjpeg/decodewasmjs" {
  const factory: (options?: Record<string, unknown>) => Promise<any>;
  export default factory;
}
declare module "@cornerstonejs/codec-openjph/wasmjs" {
  const factory: (options?: Record<string, unknown>) => Promise<any>;
  export default factory;
}
