// Compiled by CI (tsc --noEmit --strict) to check aerobridge-client.d.ts against real use; never run.
import { connect, ClientError, type Client, type Update, type Ack } from "./aerobridge-client.js";

async function use(): Promise<void> {
  const client: Client = await connect("ws://127.0.0.1:8765/", { vars: ["Aircraft.*"], hz: 10, mode: "delta", token: "t" });
  const off = client.on("update", (u: Update) => {
    const altitude: number | string | null = client.state["Aircraft.Altitude"];
    console.log(u.updateCounter, u.timestamp, u.values, u.valid, u.keyframe, altitude);
  });
  client.on("stale", (stale: boolean) => console.log(stale));
  off();
  for await (const u of client) console.log(u.updateCounter);
  try {
    const ack: Ack = await client.set("Controls.Throttle", 0.75);
    const both: Ack = await client.set({ "Controls.Throttle": 0.5, "Controls.Flaps": 0.25 });
    console.log(ack.frame, both.relayed, client.catalog.get("Aircraft.Altitude")?.unit, client.stale);
  } catch (e) {
    if (e instanceof ClientError) console.log(e.code, e.serverMessage);
  }
  await client.close();
}
void use;
