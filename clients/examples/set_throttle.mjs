// Sets the throttle and waits for the server's ack, then for the frame that shows it.
//   node --experimental-websocket clients/examples/set_throttle.mjs [ws://127.0.0.1:8765/] [0.75]
// (Node 22+ needs no flag.) With a --command-token on the bridge: AEROBRIDGE_TOKEN=… in the environment.
import { connect } from "../js/aerobridge-client.js";

const [url = "ws://127.0.0.1:8765/", value = "0.75"] = process.argv.slice(2);
const client = await connect(url, { vars: ["Controls.Throttle1"], token: process.env.AEROBRIDGE_TOKEN }).catch((e) => {
  console.error(`set_throttle: ${e.message}`);
  process.exit(1);
});
try {
  const ack = await client.set("Controls.Throttle", Number(value));
  if (ack.frame === null) {
    console.log(`ack: relayed to the upstream bridge`);
  } else {
    console.log(`ack: the throttle shows from frame ${ack.frame}`);
    for await (const update of client) {
      if (update.updateCounter >= ack.frame) {
        console.log(`frame ${update.updateCounter}: Controls.Throttle1 = ${client.state["Controls.Throttle1"]}`);
        break;
      }
    }
  }
} catch (e) {
  console.error(`set_throttle: refused: ${e.code}: ${e.serverMessage ?? e.message}`);
  process.exitCode = 2;
} finally {
  await client.close();
}
