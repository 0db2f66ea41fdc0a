import { Store } from "../../src/index.ts";
self.onmessage = async (e: MessageEvent) => {
  try {
    const { handle, seid } = e.data;
    const s = await Store.attach(handle);
    const got = await s.read(seid);
    await s.transaction((tx) => { tx.write(seid + 1000n, new Uint8Array([9, 9])); tx.write(seid, new Uint8Array([4])); });
    const again = await s.read(seid);
    await s.close();
    self.postMessage({ got: [...(got ?? [])], again: [...(again ?? [])] });
  } catch (error) { self.postMessage({ error: String((error as Error).stack) }); }
};
