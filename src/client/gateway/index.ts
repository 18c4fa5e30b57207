/** Local OpenAI-compatible gateway that seals every request it forwards. */
export { startGateway, parseListen, DEFAULT_GATEWAY_MAX_REQUEST_BYTES } from './gateway.js';
export type { Gateway, GatewayOptions } from './gateway.js';
