//! A real EVM chain for the end-to-end tests: the `anvil` binary from npm, driven over
//! JSON-RPC on loopback, and the project's own ERC-20 (`tests/contracts/Token.bin`).
//!
//! [`Anvil`] starts the node on a free loopback port with its state in a temporary file, so a
//! test can stop it (its state is dumped) and start it again on the same port and chain. The
//! payer is anvil's account 19 (the default mnemonic, `--accounts 20`): payment addresses are
//! derived from the same mnemonic's `xpub` ([`ANVIL_XPUB`]) starting at index 0, so the payer
//! is never one of the first payments' addresses.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::sol_types::{SolCall, SolValue};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use super::{http_client, poll_until};

/// The `xpub` of m/44'/60'/0'/0 for anvil's default mnemonic: child `i` is anvil's account `i`.
pub const ANVIL_XPUB: &str = "xpub6DyUKdwoLWmUJ4Tn9Bbsdtx7B5Ws18mEN19e5HT52ikE53FiUheSQXrZUNPovqfyKmw4579A1Mm3GXXKM39N64uooBfJ4tNAzFsEbodRTx4";

/// anvil's account 19, funded with 10,000 ETH: pays in every test.
pub const PAYER: &str = "0x8626f6940E2eb28930eFb4CeF49B2d1F2C9C1199";

/// anvil's chain id.
pub const CHAIN_ID: u64 = 31337;

/// One ether in wei.
pub fn ether(whole: u64) -> U256 {
    U256::from(whole) * U256::from(10u64).pow(U256::from(18))
}

alloy::sol! {
    function transfer(address to, uint256 value) external returns (bool);
    function transferMany(address[] to, uint256[] values) external returns (bool);
}

/// Where the anvil binary is: `HOOKGATE_ANVIL`, else the npm package installed in the
/// workspace (`npm install --no-save @foundry-rs/anvil-linux-amd64@1.7.1`), else `PATH`.
pub fn anvil_binary() -> PathBuf {
    if let Ok(path) = std::env::var("HOOKGATE_ANVIL") {
        return PathBuf::from(path);
    }
    let npm = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    if npm.exists() {
        return npm;
    }
    PathBuf::from("anvil")
}

/// A transaction that was mined.
#[derive(Debug, Clone)]
pub struct Mined {
    pub hash: String,
    pub block: u64,
}

/// A running anvil node.
pub struct Anvil {
    child: Option<Child>,
    port: u16,
    state: tempfile::TempDir,
    block_time: Option<f64>,
    client: reqwest::Client,
    pub url: String,
}

impl Anvil {
    /// Starts anvil mining a block per transaction.
    pub async fn start() -> Self {
        Self::launch(None).await
    }

    /// Starts anvil mining a block every `seconds` (transactions wait for the next block).
    pub async fn with_block_time(seconds: f64) -> Self {
        Self::launch(Some(seconds)).await
    }

    async fn launch(block_time: Option<f64>) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("finding a free loopback port")
            .port();
        let mut anvil = Self {
            child: None,
            port,
            state: tempfile::tempdir().expect("a directory for anvil's state"),
            block_time,
            client: http_client(),
            url: format!("http://127.0.0.1:{port}"),
        };
        anvil.spawn().await;
        anvil
    }

    async fn spawn(&mut self) {
        let mut command = Command::new(anvil_binary());
        command
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--accounts", "20", "--silent"])
            .arg("--state")
            .arg(self.state.path().join("state.json"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(seconds) = self.block_time {
            command.args(["--block-time", &seconds.to_string()]);
        }
        let child = command.spawn().unwrap_or_else(|err| {
            panic!(
                "cannot start anvil ({}): {err}. Install it with \
                 `npm install --no-save @foundry-rs/anvil-linux-amd64@1.7.1` in the workspace \
                 or set HOOKGATE_ANVIL",
                anvil_binary().display()
            )
        });
        self.child = Some(child);
        let answer = poll_until(
            Duration::from_secs(20),
            "anvil to answer eth_chainId",
            || self.try_rpc("eth_chainId", json!([])),
            Result::is_ok,
        )
        .await;
        assert_eq!(answer, Ok(json!(format!("{CHAIN_ID:#x}"))));
    }

    /// Stops the node gracefully (it dumps its state) and waits for it to exit.
    pub async fn stop(&mut self) {
        let mut child = self.child.take().expect("anvil is running");
        let pid = child.id().expect("a running child has a pid");
        // SIGTERM: anvil writes its state file on the way out.
        let status = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status()
            .expect("running kill");
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .expect("anvil exits within 20 s of SIGTERM")
            .expect("waiting for anvil");
    }

    /// Starts the node again on the same port and chain state (after [`Anvil::stop`]).
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "restart after stop");
        self.spawn().await;
    }

    /// One JSON-RPC call; `Err` carries the node's error or the transport failure.
    pub async fn try_rpc(&self, method: &str, params: Value) -> Result<Value, String> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let answer: Value = self
            .client
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(|err| err.to_string())?
            .json()
            .await
            .map_err(|err| err.to_string())?;
        match answer.get("error") {
            Some(error) => Err(error.to_string()),
            None => Ok(answer["result"].clone()),
        }
    }

    /// One JSON-RPC call that must succeed.
    pub async fn rpc(&self, method: &str, params: Value) -> Value {
        self.try_rpc(method, params.clone())
            .await
            .unwrap_or_else(|err| panic!("{method} {params} failed: {err}"))
    }

    pub async fn head(&self) -> u64 {
        hex_u64(&self.rpc("eth_blockNumber", json!([])).await)
    }

    /// Mines `blocks` empty blocks.
    pub async fn mine(&self, blocks: u64) {
        self.rpc("anvil_mine", json!([blocks])).await;
    }

    /// Sends `tx` from anvil's unlocked account and waits for its receipt.
    pub async fn send(&self, tx: Value) -> Mined {
        let receipt = self.send_for_receipt(tx).await;
        Mined {
            hash: receipt["transactionHash"]
                .as_str()
                .expect("a transaction hash")
                .to_owned(),
            block: hex_u64(&receipt["blockNumber"]),
        }
    }

    /// Sends `tx`, waits for its receipt, checks it succeeded and returns it.
    async fn send_for_receipt(&self, tx: Value) -> Value {
        let hash = self.rpc("eth_sendTransaction", json!([tx])).await;
        let receipt = poll_until(
            Duration::from_secs(30),
            "a transaction receipt",
            || self.rpc("eth_getTransactionReceipt", json!([hash])),
            |receipt| !receipt.is_null(),
        )
        .await;
        assert_eq!(receipt["status"], "0x1", "transaction failed: {receipt}");
        receipt
    }

    /// Sends `wei` of the native coin from [`PAYER`] to `to`.
    pub async fn pay(&self, to: &str, wei: U256) -> Mined {
        self.pay_from(PAYER, to, wei).await
    }

    /// Sends `wei` of the native coin from anvil account `from` to `to`.
    pub async fn pay_from(&self, from: &str, to: &str, wei: U256) -> Mined {
        self.send(json!({"from": from, "to": to, "value": format!("{wei:#x}")}))
            .await
    }

    /// anvil's unlocked account `index` (0..20).
    pub async fn account(&self, index: usize) -> String {
        let accounts = self.rpc("eth_accounts", json!([])).await;
        accounts[index].as_str().expect("an account").to_owned()
    }

    /// Deploys the project's ERC-20 with `decimals`, minting a large supply to [`PAYER`].
    pub async fn deploy_token(&self, symbol: &str, decimals: u8) -> Address {
        let code = include_str!("../contracts/Token.bin").trim();
        let supply = U256::from(10u64).pow(U256::from(40));
        let args = (
            symbol.to_owned(),
            symbol.to_owned(),
            U256::from(decimals),
            supply,
        )
            .abi_encode_params();
        let data = format!("0x{code}{}", alloy::hex::encode(args));
        let receipt = self
            .send_for_receipt(json!({"from": PAYER, "data": data}))
            .await;
        receipt["contractAddress"]
            .as_str()
            .expect("a contract address")
            .parse()
            .expect("an address")
    }

    /// Transfers `raw` units of `token` from [`PAYER`] to `to`.
    pub async fn pay_token(&self, token: Address, to: &str, raw: U256) -> Mined {
        let call = transferCall {
            to: to.parse().expect("an address"),
            value: raw,
        };
        self.call(token, call.abi_encode()).await
    }

    /// Pays several addresses in one transaction (one Transfer log each).
    pub async fn pay_token_many(&self, token: Address, payments: &[(&str, U256)]) -> Mined {
        let call = transferManyCall {
            to: payments
                .iter()
                .map(|(to, _)| to.parse().expect("an address"))
                .collect(),
            values: payments.iter().map(|(_, raw)| *raw).collect(),
        };
        self.call(token, call.abi_encode()).await
    }

    async fn call(&self, contract: Address, data: Vec<u8>) -> Mined {
        self.send(json!({
            "from": PAYER,
            "to": contract.to_string(),
            "data": format!("0x{}", alloy::hex::encode(data)),
        }))
        .await
    }

    /// The signed bytes of a mined transaction, to include it again after a reorg.
    pub async fn raw_transaction(&self, hash: &str) -> String {
        let raw = self.rpc("eth_getRawTransactionByHash", json!([hash])).await;
        raw.as_str().expect("raw transaction bytes").to_owned()
    }

    /// Replaces the last `depth` blocks with new ones holding `include` (signed transactions
    /// with the offset of the new block each goes into); the others' transactions are dropped.
    pub async fn reorg(&self, depth: u64, include: &[(String, u64)]) {
        let pairs: Vec<Value> = include
            .iter()
            .map(|(raw, offset)| json!([raw, offset]))
            .collect();
        self.rpc("anvil_reorg", json!([depth, pairs])).await;
    }
}

/// Reads a `0x…` quantity.
pub fn hex_u64(value: &Value) -> u64 {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a quantity: {value}"));
    u64::from_str_radix(text.trim_start_matches("0x"), 16)
        .unwrap_or_else(|_| panic!("not a quantity: {text}"))
}

/// What an [`RpcProxy`] does with the requests it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Passes each request to anvil and its answer back.
    Forward,
    /// Answers every request with 200 and a body that is not JSON-RPC.
    Garbage,
}

/// A loopback HTTP proxy in front of anvil that can be switched to answer garbage.
///
/// This is the one stand-in in the chain tests: no real node can be made to answer malformed
/// JSON-RPC on demand, so the proxy plays a broken node while anvil stays real behind it.
pub struct RpcProxy {
    pub url: String,
    mode: std::sync::Arc<std::sync::Mutex<ProxyMode>>,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl RpcProxy {
    pub async fn start(upstream: &str) -> Self {
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let mode = std::sync::Arc::new(std::sync::Mutex::new(ProxyMode::Forward));
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let upstream = upstream.to_owned();
        let client = http_client();
        let (task_mode, task_requests) = (mode.clone(), requests.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (upstream, client, mode, requests) = (
                    upstream.clone(),
                    client.clone(),
                    task_mode.clone(),
                    task_requests.clone(),
                );
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                            let (upstream, client, mode, requests) = (
                                upstream.clone(),
                                client.clone(),
                                mode.clone(),
                                requests.clone(),
                            );
                            async move {
                                use http_body_util::BodyExt as _;
                                requests.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                let body = request.into_body().collect().await?.to_bytes();
                                let current = *mode.lock().unwrap();
                                let answer = match current {
                                    ProxyMode::Garbage => bytes::Bytes::from_static(
                                        b"<html>502 upstream says hello</html>",
                                    ),
                                    ProxyMode::Forward => match client
                                        .post(&upstream)
                                        .header("content-type", "application/json")
                                        .body(body)
                                        .send()
                                        .await
                                    {
                                        Ok(response) => response.bytes().await.unwrap_or_default(),
                                        Err(_) => bytes::Bytes::new(),
                                    },
                                };
                                Ok::<_, hyper::Error>(
                                    hyper::Response::builder()
                                        .header("content-type", "application/json")
                                        .body(http_body_util::Full::new(answer))
                                        .expect("a response"),
                                )
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            url,
            mode,
            requests,
            task,
        }
    }

    pub fn set_mode(&self, mode: ProxyMode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for RpcProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
