// Stands in for @aws-sdk/client-chime-sdk-messaging in the browser bundle. amazon-chime-sdk-js requires it only
// for its messaging sessions (DefaultMessagingSession), which the join page does not use; the real client would
// pull Node-only modules (fs, http2, credential providers) into a bundle meant for browsers.
module.exports = {};
