-- Each node signs what it publishes with its own secret (HMAC-SHA256); the provisioner
-- generates it at launch and hands it to the node's agent, never in clear in a task file.
ALTER TABLE nodes ADD COLUMN secret text;
