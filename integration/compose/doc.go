// Package compose checks docker-compose.yml, the production-shaped Terroir
// stack, against the compose specification and against the repository:
// every service is built from this repository by a Dockerfile whose sources
// exist and reach the build, reaches its own geography's Kafka cluster and
// Redis for each geography it serves, waits for them to be healthy, listens
// on its contract ports on every interface, and has the keyring mounted
// where TERROIR_KEY_FILE says. The checks read files only and need no
// Docker engine.
package compose
